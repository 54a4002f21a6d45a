import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  type HeaderValueOption,
  HeaderValueOption_HeaderAppendAction,
  QueryParameter,
} from '@sekisho/proto/envoy/config/core/v3/base';
import { CheckResponse } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { Any } from '@sekisho/proto/google/protobuf/any';
import { BoolValue } from '@sekisho/proto/google/protobuf/wrappers';
import { authzDynamicMetadataKeys } from '@sekisho/service-kit/contract';
import { type ErrorCode, errorBody, errorCatalogue, type Language } from '@sekisho/service-kit/errors';
import type { Decision, DenyReason } from './decision';

// A decision in Envoy's words. Denials carry the reference design's JSON error body,
// the HTTP status Envoy sends, and a google.rpc code that is never OK, so Envoy denies
// even if it ignored denied_response.

export interface ResponseContext {
  /** x-request-id of the request, echoed as correlation_id. */
  correlationId: string;
  language: Language;
  now: Date;
}

const rpcCodeForHttpStatus: Record<number, grpcStatus> = {
  401: grpcStatus.UNAUTHENTICATED,
  403: grpcStatus.PERMISSION_DENIED,
  429: grpcStatus.RESOURCE_EXHAUSTED,
  431: grpcStatus.RESOURCE_EXHAUSTED,
  503: grpcStatus.UNAVAILABLE,
};

export function toCheckResponse(decision: Decision, ctx: ResponseContext): CheckResponse {
  if (!decision.allow) {
    return denied(decision.code, ctx, {
      extra: decision.requiredPermissions
        ? { required_permissions: decision.requiredPermissions }
        : decision.code === 'TOKEN_EXPIRED'
          ? refreshHint
          : ownershipReasons.has(decision.reason)
            ? notOwner
            : undefined,
      tokenError: decision.code === 'TOKEN_EXPIRED' || decision.code === 'INVALID_TOKEN',
      ...(decision.retryAfterSeconds !== undefined ? { retryAfterSeconds: decision.retryAfterSeconds } : {}),
    });
  }
  const { identity } = decision;
  const response: CheckResponse = {
    status: { code: grpcStatus.OK, message: '', details: [] },
    okResponse: {
      headers: decision.headersToSet.map(([name, value]) => headerOption(name, value)),
      headersToRemove: decision.headersToRemove,
      responseHeadersToAdd: [],
      queryParametersToSet: [],
      queryParametersToRemove: [],
    },
  };
  if (identity) {
    // Field by field, in this order (the Struct's order on the wire).
    const metadata: Record<string, string> = { [authzDynamicMetadataKeys.userId]: identity.userId };
    if (identity.group) metadata[authzDynamicMetadataKeys.group] = identity.group.name;
    if (identity.authTimeS !== undefined) metadata[authzDynamicMetadataKeys.authTime] = String(identity.authTimeS);
    if (identity.secondFactor !== undefined) metadata[authzDynamicMetadataKeys.secondFactor] = identity.secondFactor;
    if (decision.dryRunDenied) metadata[authzDynamicMetadataKeys.dryRunDenied] = decision.dryRunDenied.code;
    response.dynamicMetadata = metadata;
  }
  return response;
}

/**
 * Reference §3.1 "401 + Refresh Required": an expired token is the one 401 the app can fix
 * without the user (getIdToken(true), then retry once), so its body says so in a field the
 * app can test instead of comparing codes. The body's fixed fields stay as they are.
 */
const refreshHint = { refresh_required: true } as const;

/**
 * An ownership refusal tells the client only that the resource is not its own; why (no
 * customer id, another id, a missing value) is for the log.
 */
const notOwner = { reason: 'not_owner' } as const;
const ownershipReasons: ReadonlySet<DenyReason> = new Set<DenyReason>([
  'owner_unreadable',
  'no_customer_id',
  'owner_value_missing',
  'not_owner',
]);

/**
 * A per-user limit counted in the Check refused the request: the 429 Envoy's ratelimit
 * filter would have answered (the gateway's RATE_LIMIT_EXCEEDED body, retry_after as the
 * local reply writes it), with the rate-limit decision's RateLimit fields and Retry-After.
 */
export function rateLimitedResponse(
  rateLimitHeaders: ReadonlyArray<readonly [string, string]>,
  retryAfter: string | undefined,
  ctx: ResponseContext,
): CheckResponse {
  const response = denied('RATE_LIMIT_EXCEEDED', ctx, { extra: { retry_after: retryAfter ?? null } });
  for (const [name, value] of rateLimitHeaders) response.deniedResponse?.headers.push(headerOption(name, value));
  return response;
}

/**
 * An allowed request's answer with the RateLimit fields of its per-user limits, which Envoy
 * adds to the upstream's response as its ratelimit filter would have.
 */
export function withResponseHeaders(
  response: CheckResponse,
  headers: ReadonlyArray<readonly [string, string]>,
): CheckResponse {
  if (headers.length === 0 || !response.okResponse) return response;
  for (const [name, value] of headers) response.okResponse.responseHeadersToAdd.push(headerOption(name, value));
  return response;
}

/** A denial for an error of Sekisho's own (no policy, an exception): never an allow. */
export function failClosed(code: 'SERVICE_UNAVAILABLE' | 'AUTHORIZATION_ERROR', ctx: ResponseContext): CheckResponse {
  return denied(code, ctx, {});
}

function denied(
  code: ErrorCode,
  ctx: ResponseContext,
  opts: { extra?: Record<string, unknown> | undefined; tokenError?: boolean; retryAfterSeconds?: number },
): CheckResponse {
  // A revoked or inactive account's token is genuine: an invalid_token challenge (sign in
  // again), but not a failed token for the per-IP count.
  const accountError = code === 'TOKEN_REVOKED' || code === 'USER_INACTIVE';
  const httpStatus = errorCatalogue[code].status;
  const body = errorBody(code, {
    correlationId: ctx.correlationId,
    language: ctx.language,
    now: ctx.now,
    ...(opts.extra ? { extra: opts.extra } : {}),
  });
  const headers = [
    headerOption('content-type', 'application/json; charset=utf-8'),
    headerOption('cache-control', 'no-store'),
  ];
  const challenge = wwwAuthenticate(code, (opts.tokenError ?? false) || accountError);
  if (challenge) headers.push(headerOption('www-authenticate', challenge));
  if (opts.retryAfterSeconds !== undefined) headers.push(headerOption('retry-after', String(opts.retryAfterSeconds)));
  return {
    status: { code: rpcCodeForHttpStatus[httpStatus] ?? grpcStatus.INTERNAL, message: code, details: [] },
    deniedResponse: { status: { code: httpStatus }, headers, body: JSON.stringify(body) },
    // Envoy applies dynamic metadata on denials too: the per-IP count of failed tokens reads it.
    ...(opts.tokenError ? { dynamicMetadata: { [authzDynamicMetadataKeys.authenticationFailed]: 'true' } } : {}),
  };
}

// RFC 6750 §3: no error attribute when the request carried no token; invalid_token
// for a token that failed; insufficient_scope for a valid token lacking permissions.
function wwwAuthenticate(code: ErrorCode, tokenError: boolean): string | undefined {
  if (code === 'MISSING_TOKEN') return 'Bearer realm="sekisho"';
  if (tokenError) {
    const description =
      code === 'TOKEN_EXPIRED'
        ? 'The access token expired; refresh it and retry'
        : code === 'TOKEN_REVOKED'
          ? 'The access token was revoked; sign in again'
          : code === 'USER_INACTIVE'
            ? 'The account is inactive'
            : 'The access token is invalid';
    return `Bearer realm="sekisho", error="invalid_token", error_description="${description}"`;
  }
  if (code === 'INSUFFICIENT_PERMISSIONS') return 'Bearer realm="sekisho", error="insufficient_scope"';
  // RFC 9470 (step-up authentication): the token is genuine, the sign-in behind it not enough.
  if (code === 'ADDITIONAL_AUTH_REQUIRED') return 'Bearer realm="sekisho", error="insufficient_user_authentication"';
  return undefined;
}

const noRawValue = Buffer.alloc(0);

// The value replaces whatever the client sent. Only append_action is set: Envoy reads
// the deprecated `append` first whenever it is present, and for ext_authz an absent
// `append` has always meant "replace", so older Envoys agree.
function headerOption(key: string, value: string): HeaderValueOption {
  return {
    header: { key, value, rawValue: noRawValue },
    appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    keepEmptyValue: false,
  };
}

// ---------------------------------------------------------------------------------------
// The CheckResponse encoder the transport calls (service-kit's reused writer, and grpc-js's
// serializer through check-service's definition). ts-proto's encode wraps the dynamic metadata
// in a Struct object, each value in a Value object and each entry in an entry object, and
// walks them with closures, per response; this one writes the same fields in the same order
// straight from the CheckResponse, so the bytes are identical (check-response.test.ts compares
// them). Anything it does not write itself it hands to the generated encoders: metadata with a
// value that is not a string (never built here) makes it encode the whole message with them.

export function encodeCheckResponse(message: CheckResponse, writer: BinaryWriter = new BinaryWriter()): BinaryWriter {
  if (!stringsOnly(message.dynamicMetadata) || !stringsOnly(message.okResponse?.dynamicMetadata)) {
    return CheckResponse.encode(message, writer);
  }
  const { status, deniedResponse, okResponse, dynamicMetadata } = message;
  if (status !== undefined) {
    writer.uint32(10).fork();
    if (status.code !== 0) writer.uint32(8).int32(status.code);
    if (status.message !== '') writer.uint32(18).string(status.message);
    for (const detail of status.details) Any.encode(detail, writer.uint32(26).fork()).join();
    writer.join();
  }
  if (deniedResponse !== undefined) {
    writer.uint32(18).fork();
    if (deniedResponse.status !== undefined) {
      writer.uint32(10).fork();
      if (deniedResponse.status.code !== 0) writer.uint32(8).int32(deniedResponse.status.code);
      writer.join();
    }
    for (const option of deniedResponse.headers) writeHeaderOption(writer, 18, option);
    if (deniedResponse.body !== '') writer.uint32(26).string(deniedResponse.body);
    writer.join();
  }
  if (okResponse !== undefined) {
    writer.uint32(26).fork();
    for (const option of okResponse.headers) writeHeaderOption(writer, 18, option);
    for (const name of okResponse.headersToRemove) writer.uint32(42).string(name);
    if (okResponse.dynamicMetadata !== undefined) writeStringStruct(writer, 26, okResponse.dynamicMetadata);
    for (const option of okResponse.responseHeadersToAdd) writeHeaderOption(writer, 50, option);
    for (const parameter of okResponse.queryParametersToSet) {
      QueryParameter.encode(parameter, writer.uint32(58).fork()).join();
    }
    for (const name of okResponse.queryParametersToRemove) writer.uint32(66).string(name);
    writer.join();
  }
  if (dynamicMetadata !== undefined) writeStringStruct(writer, 34, dynamicMetadata);
  return writer;
}

function stringsOnly(metadata: { [key: string]: unknown } | undefined): boolean {
  if (metadata === undefined) return true;
  for (const key of Object.keys(metadata)) {
    const value = metadata[key];
    if (value !== undefined && typeof value !== 'string') return false;
  }
  return true;
}

// HeaderValueOption: header = 1 (key 1, value 2, raw_value 3), append = 2, append_action = 3,
// keep_empty_value = 4; each left out at its default, as ts-proto does.
function writeHeaderOption(writer: BinaryWriter, tag: number, option: HeaderValueOption): void {
  writer.uint32(tag).fork();
  const header = option.header;
  if (header !== undefined) {
    writer.uint32(10).fork();
    if (header.key !== '') writer.uint32(10).string(header.key);
    if (header.value !== '') writer.uint32(18).string(header.value);
    if (header.rawValue.length !== 0) writer.uint32(26).bytes(header.rawValue);
    writer.join();
  }
  if (option.append !== undefined) BoolValue.encode({ value: option.append }, writer.uint32(18).fork()).join();
  if (option.appendAction !== 0) writer.uint32(24).int32(option.appendAction);
  if (option.keepEmptyValue !== false) writer.uint32(32).bool(option.keepEmptyValue);
  writer.join();
}

// google.protobuf.Struct of string values: fields = 1 (entries: key 1, value 2 → Value with
// string_value = 3), in Object.keys order, undefined values left out.
function writeStringStruct(writer: BinaryWriter, tag: number, metadata: { [key: string]: unknown }): void {
  writer.uint32(tag).fork();
  for (const key of Object.keys(metadata)) {
    const value = metadata[key] as string | undefined;
    if (value === undefined) continue;
    writer.uint32(10).fork();
    if (key !== '') writer.uint32(10).string(key);
    writer.uint32(18).fork().uint32(26).string(value).join();
    writer.join();
  }
  writer.join();
}
