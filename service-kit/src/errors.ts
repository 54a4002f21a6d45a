// The one catalogue of user-facing error codes and messages (ja, en), and the JSON
// error body of the reference design:
// {"success":false,"error":{"code","message","correlation_id","timestamp",...},"data":null}

export type Language = 'ja' | 'en';

export const errorCatalogue = {
  MISSING_TOKEN: { status: 401, ja: 'アクセストークンが必要です', en: 'An access token is required.' },
  TOKEN_EXPIRED: { status: 401, ja: 'トークンの有効期限が切れています', en: 'The access token has expired.' },
  INVALID_TOKEN: { status: 401, ja: 'トークンが無効です', en: 'The access token is invalid.' },
  USER_INACTIVE: { status: 401, ja: 'アカウントが無効です', en: 'The account is inactive.' },
  TOKEN_REVOKED: {
    status: 401,
    ja: 'トークンは取り消されました。再度ログインしてください',
    en: 'The access token was revoked. Please sign in again.',
  },
  INSUFFICIENT_PERMISSIONS: {
    status: 403,
    ja: 'この操作を行う権限がありません',
    en: 'You do not have permission to perform this operation.',
  },
  AUTHORIZATION_ERROR: {
    status: 500,
    ja: '権限確認中にエラーが発生しました',
    en: 'An error occurred while checking permissions.',
  },
  RATE_LIMIT_EXCEEDED: {
    status: 429,
    ja: 'リクエストが多すぎます。しばらく待ってから再試行してください。',
    en: 'Too many requests. Please wait a while and try again.',
  },
  IP_BLOCKED: {
    status: 403,
    ja: 'このIPアドレスからのアクセスは許可されていません',
    en: 'Access from this IP address is not allowed.',
  },
  USER_BLOCKED: {
    status: 403,
    ja: '不審な操作が検出されたため、このアカウントは一時的に利用できません',
    en: 'This account is temporarily blocked because of suspicious activity.',
  },
  ADDITIONAL_AUTH_REQUIRED: {
    status: 401,
    ja: '普段と異なる場所からのログインが検出されました。追加の認証を行ってください',
    en: 'A sign-in from an unusual location was detected. Please complete additional authentication.',
  },
  GEO_BLOCKED: {
    status: 403,
    ja: 'お住まいの地域からはご利用いただけません',
    en: 'This service is not available in your region.',
  },
  REQUEST_HEADERS_TOO_LARGE: {
    status: 431,
    ja: 'リクエストヘッダーが多すぎるか、大きすぎます',
    en: 'The request headers are too many or too large.',
  },
  VALIDATION_ERROR: { status: 400, ja: '入力データが正しくありません', en: 'The request data is invalid.' },
  NOT_FOUND: { status: 404, ja: '指定されたリソースが見つかりません', en: 'The requested resource was not found.' },
  CSRF_ORIGIN_MISMATCH: {
    status: 403,
    ja: 'このオリジンからの変更リクエストは許可されていません',
    en: 'State-changing requests from this origin are not allowed.',
  },
  CORS_PREFLIGHT_REFUSED: {
    status: 403,
    ja: 'このオリジンからのクロスオリジンリクエストは許可されていません',
    en: 'Cross-origin requests from this origin are not allowed.',
  },
  SERVICE_UNAVAILABLE: {
    status: 503,
    ja: 'サービスが一時的に利用できません',
    en: 'The service is temporarily unavailable.',
  },
  INTERNAL_SERVER_ERROR: {
    status: 500,
    ja: 'サーバー内部エラーが発生しました',
    en: 'An internal server error occurred.',
  },
  // Envoy's own answers (local replies), rendered by the control plane's local-reply table.
  BAD_REQUEST: { status: 400, ja: 'リクエストの形式が正しくありません', en: 'The request is malformed.' },
  METHOD_NOT_ALLOWED: {
    status: 405,
    ja: 'このリソースではそのメソッドは使用できません',
    en: 'The method is not allowed for this resource.',
  },
  REQUEST_TIMEOUT: {
    status: 408,
    ja: 'リクエストの受信がタイムアウトしました',
    en: 'The request took too long to arrive.',
  },
  PAYLOAD_TOO_LARGE: {
    status: 413,
    ja: 'リクエストの本文が大きすぎます',
    en: 'The request body is too large.',
  },
  UPGRADE_REQUIRED: {
    status: 426,
    ja: 'HTTP/1.1 以降でリクエストしてください',
    en: 'Please use HTTP/1.1 or later.',
  },
  BAD_GATEWAY: {
    status: 502,
    ja: '上流サービスから不正な応答がありました',
    en: 'The upstream service sent an invalid response.',
  },
  GATEWAY_TIMEOUT: {
    status: 504,
    ja: '上流サービスの応答がタイムアウトしました',
    en: 'The upstream service did not answer in time.',
  },
} as const satisfies Record<string, { status: number; ja: string; en: string }>;

export type ErrorCode = keyof typeof errorCatalogue;

/** Japanese unless the client's first preference is English. */
export function pickLanguage(acceptLanguage: string | undefined): Language {
  const first = acceptLanguage?.split(',')[0]?.trim().toLowerCase() ?? '';
  return first.startsWith('en') ? 'en' : 'ja';
}

export interface ErrorBody {
  success: false;
  error: {
    code: ErrorCode;
    message: string;
    correlation_id: string;
    timestamp: string;
    [extra: string]: unknown;
  };
  data: null;
}

export function errorBody(
  code: ErrorCode,
  options: { correlationId: string; language?: Language; now?: Date; extra?: Record<string, unknown> },
): ErrorBody {
  const fixed = {
    code,
    message: errorCatalogue[code][options.language ?? 'ja'],
    correlation_id: options.correlationId,
    timestamp: (options.now ?? new Date()).toISOString(),
  };
  // Extras add fields (required_permissions) after the fixed ones but cannot replace them.
  return { success: false, error: { ...fixed, ...options.extra, ...fixed }, data: null };
}
