// decide() with a geo anomaly's additional-authentication state: the user's verified requests
// get 401 ADDITIONAL_AUTH_REQUIRED until a second factor from a sign-in at or after the far one
// is shown, or the request names a device an operator trusted for the user, or the state expires.
import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { deviceHash, type ThreatBlock } from '@sekisho/service-kit/threat-contract';
import { describe, expect, it } from 'vitest';
import { toCheckResponse } from '../check-response';
import { type CheckInput, decide, routeRequirements, type VerifyToken } from '../decision';
import { compileAuthzPolicy } from '../policy';
import { ThreatTable } from './state';

const policy = compileAuthzPolicy(
  AuthzPolicy.fromPartial({
    firebase: { projectId: 'salon-test' },
    groupClaim: 'tier',
    defaultGroup: 'basic',
    groups: { basic: { permissions: ['read:own_profile'] } },
  }),
);
const now = 1_700_000_000_000;
/** The far sign-in's auth_time, which the state carries. */
const farSignInS = now / 1000 - 60;

function verifyAs(opts: { authTimeS: number; secondFactor?: string }): VerifyToken {
  return async () => ({
    ok: true,
    claims: {
      uid: 'uid-1',
      payload: {
        sub: 'uid-1',
        auth_time: opts.authTimeS,
        firebase: {
          sign_in_provider: 'password',
          ...(opts.secondFactor ? { sign_in_second_factor: opts.secondFactor } : {}),
        },
      },
    },
  });
}

function input(opts: { deviceId?: string; nowMs?: number } = {}): CheckInput {
  return {
    headers: {
      ':path': '/api/v1/customer/profile',
      authorization: 'Bearer t',
      ...(opts.deviceId !== undefined ? { 'x-device-id': opts.deviceId } : {}),
    },
    route: routeRequirements({
      'sekisho.route_id': 'profile',
      'sekisho.auth': 'required',
      'sekisho.permissions': 'read:own_profile',
    }),
    clientIp: '192.0.2.9',
    nowMs: opts.nowMs ?? now,
  };
}

const state: ThreatBlock = {
  kind: 'auth',
  subject: 'uid-1',
  rule: 'geo_anomaly',
  severity: 'medium',
  untilMs: now + 3_600_000,
  authTimeS: farSignInS,
  devices: [deviceHash('laptop-registered')],
};

function table(...blocks: ThreatBlock[]) {
  const threats = new ThreatTable();
  threats.replace(blocks);
  return threats;
}

describe('decide with an additional-authentication state', () => {
  it('answers 401 ADDITIONAL_AUTH_REQUIRED in the JSON error format, with a step-up challenge', async () => {
    const decision = await decide(input(), policy, verifyAs({ authTimeS: farSignInS }), undefined, table(state));
    expect(decision).toMatchObject({
      allow: false,
      code: 'ADDITIONAL_AUTH_REQUIRED',
      userId: 'uid-1',
      threat: { rule: 'geo_anomaly', severity: 'medium', untilMs: now + 3_600_000 },
    });
    const response = toCheckResponse(decision, { correlationId: 'req-1', language: 'en', now: new Date(now) });
    expect(response.deniedResponse?.status?.code).toBe(401);
    expect(JSON.parse(response.deniedResponse?.body ?? '{}')).toMatchObject({
      success: false,
      error: { code: 'ADDITIONAL_AUTH_REQUIRED', correlation_id: 'req-1' },
      data: null,
    });
    expect(response.deniedResponse?.headers.map((h) => [h.header?.key, h.header?.value])).toContainEqual([
      'www-authenticate',
      'Bearer realm="sekisho", error="insufficient_user_authentication"',
    ]);
    // A genuine token: not a failed authentication for the per-IP brute-force count.
    expect(response.dynamicMetadata).toBeUndefined();
  });

  it.each([
    { name: 'a second factor at the far sign-in', authTimeS: farSignInS, secondFactor: 'phone', allow: true },
    { name: 'a second factor after it', authTimeS: farSignInS + 30, secondFactor: 'totp', allow: true },
    { name: 'a second factor from before it', authTimeS: farSignInS - 1, secondFactor: 'phone', allow: false },
    { name: 'a newer sign-in without a second factor', authTimeS: farSignInS + 30, allow: false },
  ])('$name: allowed $allow', async ({ authTimeS, secondFactor, allow }) => {
    const verify = verifyAs({ authTimeS, ...(secondFactor ? { secondFactor } : {}) });
    expect((await decide(input(), policy, verify, undefined, table(state))).allow).toBe(allow);
  });

  it.each([
    { name: 'a device an operator trusted for the user', deviceId: 'laptop-registered', allow: true },
    { name: 'a device nobody registered', deviceId: 'laptop-of-the-attacker', allow: false },
    { name: 'an empty device id', deviceId: '', allow: false },
    { name: "the registered device's hash itself", deviceId: deviceHash('laptop-registered'), allow: false },
  ])('$name: allowed $allow', async ({ deviceId, allow }) => {
    const decision = await decide(
      input({ deviceId }),
      policy,
      verifyAs({ authTimeS: farSignInS }),
      undefined,
      table(state),
    );
    expect(decision.allow).toBe(allow);
  });

  it('lets the user through once the state expired (the injected clock), and other users always', async () => {
    const verify = verifyAs({ authTimeS: farSignInS });
    const threats = table(state);
    expect((await decide(input({ nowMs: now + 3_600_000 - 1 }), policy, verify, undefined, threats)).allow).toBe(false);
    expect((await decide(input({ nowMs: now + 3_600_000 }), policy, verify, undefined, threats)).allow).toBe(true);
    const other = table({ ...state, subject: 'uid-2' });
    expect((await decide(input(), policy, verify, undefined, other)).allow).toBe(true);
  });

  it('answers USER_BLOCKED first when the user is also blocked', async () => {
    const blocked: ThreatBlock = {
      kind: 'user',
      subject: 'uid-1',
      rule: 'data_exfiltration',
      severity: 'critical',
      untilMs: now + 60_000,
    };
    const decision = await decide(
      input(),
      policy,
      verifyAs({ authTimeS: farSignInS }),
      undefined,
      table(state, blocked),
    );
    expect(decision).toMatchObject({ allow: false, code: 'USER_BLOCKED' });
  });

  it('puts the auth_time and second factor in the dynamic metadata of an allowed request', async () => {
    const decision = await decide(
      input(),
      policy,
      verifyAs({ authTimeS: farSignInS, secondFactor: 'phone' }),
      undefined,
      table(),
    );
    const response = toCheckResponse(decision, { correlationId: 'req-1', language: 'en', now: new Date(now) });
    expect(response.dynamicMetadata).toMatchObject({
      user_id: 'uid-1',
      auth_time: String(farSignInS),
      second_factor: 'phone',
    });
  });
});
