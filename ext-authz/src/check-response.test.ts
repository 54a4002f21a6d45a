import { status as grpcStatus } from '@grpc/grpc-js';
import { HeaderValueOption_HeaderAppendAction } from '@sekisho/proto/envoy/config/core/v3/base';
import { CheckResponse } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { identityHeaders } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import { encodeCheckResponse, failClosed, type ResponseContext, toCheckResponse } from './check-response';
import type { Decision, Denial } from './decision';
import type { Group } from './policy';

const ctx: ResponseContext = { correlationId: 'req-123', language: 'en', now: new Date('2030-01-01T00:00:00Z') };
const basic: Group = {
  name: 'basic_customer',
  permissions: new Set(['read:own_profile']),
  permissionList: ['read:own_profile'],
  permissionHeader: 'read:own_profile',
};

function headers(response: CheckResponse): Record<string, string> {
  const list = response.deniedResponse?.headers ?? response.okResponse?.headers ?? [];
  return Object.fromEntries(list.map((option) => [option.header?.key, option.header?.value]));
}

describe('toCheckResponse', () => {
  it.each([
    { code: 'MISSING_TOKEN', http: 401, rpc: grpcStatus.UNAUTHENTICATED, challenge: 'Bearer realm="sekisho"' },
    {
      code: 'INVALID_TOKEN',
      http: 401,
      rpc: grpcStatus.UNAUTHENTICATED,
      challenge: 'Bearer realm="sekisho", error="invalid_token", error_description="The access token is invalid"',
    },
    {
      code: 'TOKEN_EXPIRED',
      http: 401,
      rpc: grpcStatus.UNAUTHENTICATED,
      challenge:
        'Bearer realm="sekisho", error="invalid_token", error_description="The access token expired; refresh it and retry"',
      extra: { refresh_required: true },
    },
    {
      code: 'TOKEN_REVOKED',
      http: 401,
      rpc: grpcStatus.UNAUTHENTICATED,
      challenge:
        'Bearer realm="sekisho", error="invalid_token", error_description="The access token was revoked; sign in again"',
    },
    {
      code: 'USER_INACTIVE',
      http: 401,
      rpc: grpcStatus.UNAUTHENTICATED,
      challenge: 'Bearer realm="sekisho", error="invalid_token", error_description="The account is inactive"',
    },
    {
      code: 'INSUFFICIENT_PERMISSIONS',
      http: 403,
      rpc: grpcStatus.PERMISSION_DENIED,
      challenge: 'Bearer realm="sekisho", error="insufficient_scope"',
    },
    { code: 'SERVICE_UNAVAILABLE', http: 503, rpc: grpcStatus.UNAVAILABLE, challenge: undefined },
  ] as const)('denies $code with HTTP $http and gRPC code $rpc', ({ code, http, rpc, challenge, ...rest }) => {
    const response = toCheckResponse({ allow: false, code, reason: 'malformed' }, ctx);
    expect(response.status?.code).toBe(rpc);
    expect(response.deniedResponse?.status?.code).toBe(http);
    expect(response.okResponse).toBeUndefined();
    expect(headers(response)).toEqual({
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
      ...(challenge ? { 'www-authenticate': challenge } : {}),
    });
    expect(JSON.parse(response.deniedResponse?.body ?? '')).toEqual({
      success: false,
      error: {
        code,
        message: expect.any(String),
        correlation_id: 'req-123',
        timestamp: '2030-01-01T00:00:00.000Z',
        ...('extra' in rest ? rest.extra : {}),
      },
      data: null,
    });
  });

  it('tells the app to refresh only for an expired token', () => {
    const body = (code: 'TOKEN_EXPIRED' | 'INVALID_TOKEN' | 'MISSING_TOKEN') =>
      JSON.parse(toCheckResponse({ allow: false, code, reason: 'expired' }, ctx).deniedResponse?.body ?? '').error;
    expect(body('TOKEN_EXPIRED').refresh_required).toBe(true);
    expect(body('INVALID_TOKEN').refresh_required).toBeUndefined();
    expect(body('MISSING_TOKEN').refresh_required).toBeUndefined();
  });

  it.each([
    { code: 'INVALID_TOKEN', failed: true },
    { code: 'TOKEN_EXPIRED', failed: true },
    { code: 'MISSING_TOKEN', failed: false },
    // A genuine token of an account that is signed out or disabled: not a guess to count per IP.
    { code: 'TOKEN_REVOKED', failed: false },
    { code: 'USER_INACTIVE', failed: false },
    { code: 'INSUFFICIENT_PERMISSIONS', failed: false },
  ] as const)('marks a denial for a token that failed verification in dynamic metadata ($code)', ({ code, failed }) => {
    const response = toCheckResponse({ allow: false, code, reason: 'malformed' }, ctx);
    expect(response.dynamicMetadata).toEqual(failed ? { authentication_failed: 'true' } : undefined);
  });

  it('lists the route permissions in a 403 body', () => {
    const decision: Decision = {
      allow: false,
      code: 'INSUFFICIENT_PERMISSIONS',
      reason: 'missing_permissions',
      userId: 'u1',
      requiredPermissions: ['read:own_profile', 'create:appointments'],
      missingPermissions: ['create:appointments'],
    };
    const body = JSON.parse(toCheckResponse(decision, ctx).deniedResponse?.body ?? '');
    expect(body.error.required_permissions).toEqual(['read:own_profile', 'create:appointments']);
    // Which permission is missing is for the log, not for the client.
    expect(body.error.missing_permissions).toBeUndefined();
  });

  it.each(['not_owner', 'no_customer_id', 'owner_value_missing', 'owner_unreadable'] as const)(
    'says only "not_owner" in the body of an ownership refusal (%s)',
    (reason) => {
      const response = toCheckResponse({ allow: false, code: 'INSUFFICIENT_PERMISSIONS', reason, userId: 'u1' }, ctx);
      expect(response.deniedResponse?.status?.code).toBe(403);
      const { error } = JSON.parse(response.deniedResponse?.body ?? '');
      expect(error).toMatchObject({ code: 'INSUFFICIENT_PERMISSIONS', reason: 'not_owner' });
      expect(error.required_permissions).toBeUndefined();
    },
  );

  it('writes the message in the language of the request', () => {
    const ja = toCheckResponse(
      { allow: false, code: 'MISSING_TOKEN', reason: 'no_bearer_token' },
      { ...ctx, language: 'ja' },
    );
    expect(JSON.parse(ja.deniedResponse?.body ?? '').error.message).toBe('アクセストークンが必要です');
  });

  it('allows with overwriting identity headers, removals and dynamic metadata', () => {
    const response = toCheckResponse(
      {
        allow: true,
        identity: { userId: 'u1', group: basic },
        headersToSet: [
          [identityHeaders.userId, 'u1'],
          [identityHeaders.group, 'basic_customer'],
        ],
        headersToRemove: [identityHeaders.email],
      },
      ctx,
    );
    expect(response.status?.code).toBe(grpcStatus.OK);
    expect(response.deniedResponse).toBeUndefined();
    // append_action alone: Envoy would let a present `append` override it.
    expect(response.okResponse?.headers.every((h) => h.append === undefined)).toBe(true);
    expect(
      response.okResponse?.headers.every(
        (h) => h.appendAction === HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
      ),
    ).toBe(true);
    expect(headers(response)).toEqual({ [identityHeaders.userId]: 'u1', [identityHeaders.group]: 'basic_customer' });
    expect(response.okResponse?.headersToRemove).toEqual([identityHeaders.email]);
    expect(response.dynamicMetadata).toEqual({ user_id: 'u1', group: 'basic_customer' });
  });

  it('survives the protobuf round trip Envoy will see', () => {
    const response = toCheckResponse(
      {
        allow: true,
        identity: { userId: 'u1' },
        headersToSet: [[identityHeaders.userId, 'u1']],
        headersToRemove: [],
      },
      ctx,
    );
    const decoded = CheckResponse.decode(CheckResponse.encode(response).finish());
    expect(decoded.okResponse?.headers[0]).toMatchObject({
      header: { key: identityHeaders.userId, value: 'u1' },
      append: undefined,
      appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    });
    expect(decoded.dynamicMetadata).toEqual({ user_id: 'u1' });
  });

  it('sets no dynamic metadata on an auth: none route', () => {
    const response = toCheckResponse({ allow: true, identity: undefined, headersToSet: [], headersToRemove: [] }, ctx);
    expect(response.dynamicMetadata).toBeUndefined();
  });
});

describe('failClosed', () => {
  it('denies with 500 and gRPC INTERNAL on an internal error', () => {
    const response = failClosed('AUTHORIZATION_ERROR', ctx);
    expect(response.status?.code).toBe(grpcStatus.INTERNAL);
    expect(response.deniedResponse?.status?.code).toBe(500);
    expect(JSON.parse(response.deniedResponse?.body ?? '').error.code).toBe('AUTHORIZATION_ERROR');
  });
});

describe('encodeCheckResponse', () => {
  // The bytes of the generated encoder, for every kind of answer toCheckResponse gives and for
  // random CheckResponses of any shape (those it does not write itself go to the generated code).
  const same = (response: CheckResponse) =>
    expect(Buffer.from(encodeCheckResponse(response).finish()).toString('hex')).toBe(
      Buffer.from(CheckResponse.encode(response).finish()).toString('hex'),
    );
  const verified: Group = { ...basic, permissionHeader: 'read:own_profile,create:appointments' };
  const denyCodes: Denial['code'][] = [
    'MISSING_TOKEN',
    'TOKEN_EXPIRED',
    'INVALID_TOKEN',
    'USER_INACTIVE',
    'TOKEN_REVOKED',
    'INSUFFICIENT_PERMISSIONS',
    'REQUEST_HEADERS_TOO_LARGE',
    'SERVICE_UNAVAILABLE',
    'IP_BLOCKED',
    'USER_BLOCKED',
    'RATE_LIMIT_EXCEEDED',
    'ADDITIONAL_AUTH_REQUIRED',
  ];

  it('writes what the generated encoder writes for every answer toCheckResponse and failClosed give', () => {
    const decisions: Decision[] = [
      { allow: true, identity: undefined, headersToSet: [], headersToRemove: [identityHeaders.userId] },
      {
        allow: true,
        identity: {
          userId: 'user-1',
          email: 'taro@example.com',
          emailVerified: true,
          group: verified,
          authTimeS: 1_900_000_000,
          secondFactor: 'phone',
        },
        dryRunDenied: { allow: false, code: 'INSUFFICIENT_PERMISSIONS', reason: 'missing_permissions' },
        headersToSet: [
          [identityHeaders.userId, 'user-1'],
          [identityHeaders.email, '太郎@example.com'],
          [identityHeaders.group, verified.name],
        ],
        headersToRemove: [identityHeaders.phone, 'x-sekisho-other'],
      },
      { allow: true, identity: { userId: '' }, headersToSet: [[identityHeaders.userId, '']], headersToRemove: [] },
      ...denyCodes.map((code): Decision => ({ allow: false, code, reason: 'no_policy' })),
      { allow: false, code: 'RATE_LIMIT_EXCEEDED', reason: 'no_policy', retryAfterSeconds: 42 },
      {
        allow: false,
        code: 'INSUFFICIENT_PERMISSIONS',
        reason: 'missing_permissions',
        requiredPermissions: ['read:own_profile', 'create:appointments'],
      },
      { allow: false, code: 'INSUFFICIENT_PERMISSIONS', reason: 'not_owner' },
    ];
    for (const language of ['ja', 'en'] as const) {
      for (const decision of decisions) same(toCheckResponse(decision, { ...ctx, language }));
    }
    same(failClosed('AUTHORIZATION_ERROR', ctx));
    same(failClosed('SERVICE_UNAVAILABLE', { ...ctx, correlationId: '' }));
  });

  it('writes what the generated encoder writes for random CheckResponses, other metadata values included', () => {
    let seed = 1234;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
    const text = () => pick(['', 'a', 'x-sekisho-user-id', '日本語', 'é'.repeat(200), '0', 'constructor']);
    const option = () => ({
      header:
        next() < 0.9
          ? { key: text(), value: text(), rawValue: next() < 0.2 ? Buffer.from('raw') : Buffer.alloc(0) }
          : undefined,
      ...(next() < 0.2 ? { append: next() < 0.5 } : {}),
      appendAction: pick([0, 1, 2, 3]),
      keepEmptyValue: next() < 0.2,
    });
    const metadata = () => {
      const values: Record<string, unknown> = {};
      for (let i = Math.floor(next() * 5); i > 0; i--) {
        values[pick(['user_id', 'group', '7', '', 'auth_time'])] = pick<unknown>([
          text(),
          text(),
          undefined,
          5,
          true,
          null,
          { a: 'b' },
          ['c'],
        ]);
      }
      return values;
    };
    const list = <T>(make: () => T) => Array.from({ length: Math.floor(next() * 4) }, make);
    for (let i = 0; i < 2000; i++) {
      same(
        CheckResponse.fromPartial({
          ...(next() < 0.9
            ? {
                status: {
                  code: pick([0, 7, 16]),
                  message: text(),
                  details: next() < 0.1 ? [{ typeUrl: 'type.googleapis.com/x', value: Buffer.from('v') }] : [],
                },
              }
            : {}),
          ...(next() < 0.5
            ? {
                deniedResponse: {
                  ...(next() < 0.9 ? { status: { code: pick([0, 401, 503]) } } : {}),
                  headers: list(option),
                  body: text(),
                },
              }
            : {}),
          ...(next() < 0.5
            ? {
                okResponse: {
                  headers: list(option),
                  headersToRemove: list(text),
                  ...(next() < 0.3 ? { dynamicMetadata: metadata() } : {}),
                  responseHeadersToAdd: list(option),
                  queryParametersToSet: list(() => ({ key: text(), value: text() })),
                  queryParametersToRemove: list(text),
                },
              }
            : {}),
          ...(next() < 0.5 ? { dynamicMetadata: metadata() } : {}),
        }),
      );
    }
  });
});
