import { status as grpcStatus } from '@grpc/grpc-js';
import { HeaderValueOption_HeaderAppendAction } from '@sekisho/proto/envoy/config/core/v3/base';
import { CheckResponse } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { identityHeaders } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import { failClosed, type ResponseContext, toCheckResponse } from './check-response';
import type { Decision } from './decision';
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
