// decide() with the threat detector's blocks: an IP block answers before any token work on
// every route, a user's block or aggressive limit after verification, and the answers carry
// the reference design's codes in the JSON error body.
import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import type { ThreatBlock } from '@sekisho/service-kit/threat-contract';
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
let verifications = 0;
const verify: VerifyToken = async () => {
  verifications++;
  return { ok: true, claims: { uid: 'uid-1', payload: { sub: 'uid-1', firebase: { sign_in_provider: 'password' } } } };
};

function input(opts: { ip: string; auth?: 'none' | 'required'; nowMs?: number }): CheckInput {
  return {
    headers: { ':path': '/api/v1/customer/profile', authorization: 'Bearer t' },
    route: routeRequirements({
      'sekisho.route_id': 'profile',
      'sekisho.auth': opts.auth ?? 'required',
      'sekisho.permissions': opts.auth === 'none' ? '' : 'read:own_profile',
    }),
    clientIp: opts.ip,
    nowMs: opts.nowMs ?? now,
  };
}

const block = (patch: Partial<ThreatBlock> & Pick<ThreatBlock, 'kind' | 'subject'>) =>
  ({ rule: 'brute_force', severity: 'high', untilMs: now + 3_600_000, ...patch }) as ThreatBlock;

function table(...blocks: ThreatBlock[]) {
  const threats = new ThreatTable();
  threats.replace(blocks);
  return threats;
}

describe('decide with threat blocks', () => {
  it.each(['required', 'none'] as const)(
    'refuses a blocked IP on an auth: %s route without verifying a token',
    async (auth) => {
      verifications = 0;
      const threats = table(block({ kind: 'ip', subject: '198.51.100.1' }));
      const decision = await decide(input({ ip: '198.51.100.1', auth }), policy, verify, undefined, threats);
      expect(decision).toMatchObject({
        allow: false,
        code: 'IP_BLOCKED',
        threat: { rule: 'brute_force', severity: 'high' },
      });
      expect(verifications).toBe(0);
      expect((await decide(input({ ip: '198.51.100.2', auth }), policy, verify, undefined, threats)).allow).toBe(true);
    },
  );

  it('serves the IP again once its block expired', async () => {
    const threats = table(block({ kind: 'ip', subject: '198.51.100.1' }));
    const later = input({ ip: '198.51.100.1', nowMs: now + 3_600_000 });
    expect((await decide(later, policy, verify, undefined, threats)).allow).toBe(true);
  });

  it('refuses a blocked user after verification, from any address', async () => {
    const threats = table(block({ kind: 'user', subject: 'uid-1', rule: 'data_exfiltration', severity: 'critical' }));
    expect(await decide(input({ ip: '192.0.2.9' }), policy, verify, undefined, threats)).toMatchObject({
      allow: false,
      code: 'USER_BLOCKED',
      userId: 'uid-1',
      threat: { rule: 'data_exfiltration', severity: 'critical' },
    });
  });

  it('answers the 11th request in a minute of a flagged user with 429 and Retry-After', async () => {
    const threats = table(
      block({
        kind: 'limit',
        subject: 'uid-1',
        rule: 'suspicious_usage',
        severity: 'medium',
        limit: 10,
        windowMs: 60_000,
      }),
    );
    for (let i = 0; i < 10; i++) {
      expect((await decide(input({ ip: '192.0.2.9', nowMs: now + i }), policy, verify, undefined, threats)).allow).toBe(
        true,
      );
    }
    const refused = await decide(input({ ip: '192.0.2.9', nowMs: now + 30_000 }), policy, verify, undefined, threats);
    expect(refused).toMatchObject({ allow: false, code: 'RATE_LIMIT_EXCEEDED', retryAfterSeconds: 30 });
    const response = toCheckResponse(refused, { correlationId: 'req-1', language: 'en', now: new Date(now) });
    expect(response.deniedResponse?.status?.code).toBe(429);
    expect(response.deniedResponse?.headers.map((h) => [h.header?.key, h.header?.value])).toContainEqual([
      'retry-after',
      '30',
    ]);
    expect(JSON.parse(response.deniedResponse?.body ?? '{}').error.code).toBe('RATE_LIMIT_EXCEEDED');
  });

  it.each([
    ['IP_BLOCKED', block({ kind: 'ip', subject: '198.51.100.1' }), 403],
    ['USER_BLOCKED', block({ kind: 'user', subject: 'uid-1' }), 403],
  ] as const)('answers %s in the JSON error format with status %i', async (code, blocked, status) => {
    const decision = await decide(input({ ip: '198.51.100.1' }), policy, verify, undefined, table(blocked));
    const response = toCheckResponse(decision, { correlationId: 'req-1', language: 'ja', now: new Date(now) });
    expect(response.deniedResponse?.status?.code).toBe(status);
    const body = JSON.parse(response.deniedResponse?.body ?? '{}');
    expect(body).toMatchObject({ success: false, error: { code, correlation_id: 'req-1' }, data: null });
  });
});
