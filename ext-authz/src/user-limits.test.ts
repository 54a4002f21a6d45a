import { randomUUID } from 'node:crypto';
import { generateSigningKey, mintIdToken, type SigningKey } from '@sekisho/devstack/firebase-keys';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { AuthzPolicy, RateLimitPolicy, StoreFailureMode } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authenticated, routeForUser, startTestService } from '@sekisho/ratelimit-service/test-helpers';
import { authzContextKeys, descriptorKeys as k } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { resolveRedisTopology } from '@sekisho/service-kit/redis-topology';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { check } from './check-service';
import { routeRequirements } from './decision';
import { importCertificateKey } from './firebase/key-store';
import { verifyFirebaseIdToken } from './firebase/verify';
import { createExtAuthzMetrics } from './metrics';
import { compileAuthzPolicy } from './policy';
import { createUserLimits, type UserLimits, type UserLimitsOptions } from './user-limits';

// The per-user limits counted in the Check (perUserLimits: ext-authz), against a real
// redis-server: the rate-limit service's decision in-process, sharing its counters.

let redis: RedisHandle;
const opened: Array<{ close(): Promise<void> }> = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const item of opened.splice(0)) await item.close();
});
afterAll(async () => {
  await redis?.stop();
});

const quiet = createLogger('ext-authz', { level: 'silent' });

/** Per-user rules in the shape the control plane sends; a fresh domain per test keeps counts apart. */
function limitsPolicy(domain: string, overrides: Partial<RateLimitPolicy> = {}): RateLimitPolicy {
  return RateLimitPolicy.fromPartial({
    domain,
    rules: [
      {
        id: 'authenticated/user/60s',
        match: [
          { key: k.limitClass, value: 'authenticated' },
          { key: k.user, value: '' },
        ],
        requestsPerWindow: 3,
        windowSeconds: 60,
      },
      {
        id: 'route:booking/user/60s',
        match: [
          { key: k.route, value: 'booking' },
          { key: k.user, value: '' },
        ],
        requestsPerWindow: 1,
        windowSeconds: 60,
      },
    ],
    ...overrides,
  });
}

/** Until Redis answered once (what readiness waits for before Envoy sends a Check). */
async function connected(limits: UserLimits): Promise<UserLimits> {
  const deadline = Date.now() + 10_000;
  while (!limits.ready()) {
    if (Date.now() > deadline) throw new Error('Redis did not answer within 10 s');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return limits;
}

function start(overrides: Partial<UserLimitsOptions> = {}, url = redis.url): UserLimits {
  const limits = createUserLimits({
    topology: resolveRedisTopology({ url, mode: 'standalone' }, 'EXT_AUTHZ'),
    commandTimeoutMs: 200,
    failureMode: 'allow',
    keySecret: undefined,
    headerStyle: 'draft-10',
    lease: { fraction: 0.01, max: 100 },
    logger: quiet,
    registry: new Registry(),
    ...overrides,
  });
  opened.push(limits);
  return limits;
}

describe('createUserLimits', () => {
  it('counts the definition-wide limit per user and refuses the one over it with the RateLimit fields', async () => {
    const limits = start();
    limits.apply(limitsPolicy(`t-${randomUUID()}`));
    await connected(limits);
    const outcomes = [];
    for (let i = 0; i < 4; i++) outcomes.push(await limits.limit('profile', ['authenticated'], 'user-1'));
    expect(outcomes.map((o) => o.overLimit)).toEqual([false, false, false, true]);
    const within = Object.fromEntries(outcomes[0]?.headers ?? []);
    expect(within['ratelimit-policy']).toBe('"authenticated/user/60s";q=3;w=60');
    expect(within.ratelimit).toMatch(/^"authenticated\/user\/60s";r=2;t=\d+$/);
    const refused = outcomes[3];
    expect(Number(refused?.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Object.fromEntries(refused?.headers ?? [])['retry-after']).toBe(refused?.retryAfter);
    // Another user has a count of their own.
    expect((await limits.limit('profile', ['authenticated'], 'user-2')).overLimit).toBe(false);
  });

  it("counts a route's own limit per route and user, and only the families the route names", async () => {
    const limits = start();
    limits.apply(limitsPolicy(`t-${randomUUID()}`));
    await connected(limits);
    expect((await limits.limit('booking', ['route'], 'user-1')).overLimit).toBe(false);
    expect((await limits.limit('booking', ['route'], 'user-1')).overLimit).toBe(true);
    // The same user elsewhere, and someone else here, are not refused by it.
    expect((await limits.limit('booking', ['route'], 'user-2')).overLimit).toBe(false);
    expect((await limits.limit('other', ['route'], 'user-1')).overLimit).toBe(false);
    // No families (a route whose limits Envoy's ratelimit filter counts): nothing counted.
    const none = await limits.limit('booking', [], 'user-3');
    expect(none).toMatchObject({ overLimit: false, headers: [] });
    expect((await limits.limit('booking', ['route'], 'user-3')).overLimit).toBe(false);
  });

  it('shares its counters with the rate-limit service and with the other ext-authz replicas', async () => {
    const domain = `t-${randomUUID()}`;
    const [first, second] = [start(), start()];
    first.apply(limitsPolicy(domain));
    second.apply(limitsPolicy(domain));
    await Promise.all([connected(first), connected(second)]);
    const service = await startTestService({ redisUrl: redis.url });
    opened.push(service);
    service.app.applyPolicy(limitsPolicy(domain), 'v1');

    expect((await first.limit('profile', ['authenticated'], 'user-1')).overLimit).toBe(false);
    expect((await second.limit('profile', ['authenticated'], 'user-1')).overLimit).toBe(false);
    // The third request of the three allowed goes through the rate-limit service, as Envoy would send it.
    const viaService = await service.call({ domain, descriptors: [authenticated('user-1')] });
    expect(viaService.overallCode).toBe(1);
    expect((await first.limit('profile', ['authenticated'], 'user-1')).overLimit).toBe(true);
    const refused = await service.call({ domain, descriptors: [authenticated('user-1'), routeForUser('x', 'user-1')] });
    expect(refused.overallCode).toBe(2);
  });

  it('answers a busy user from leases, never past the limit across two replicas and the rate-limit service', async () => {
    const domain = `t-${randomUUID()}`;
    // 400 a minute: leases of 4 (1%), plus the route's 1 a minute decided per request.
    const policy = limitsPolicy(domain);
    const busy = RateLimitPolicy.fromPartial({
      ...policy,
      rules: policy.rules.map((r) => (r.id.startsWith('authenticated') ? { ...r, requestsPerWindow: 400 } : r)),
    });
    const registry = new Registry();
    const [first, second] = [start({ registry }), start()];
    first.apply(busy);
    second.apply(busy);
    await Promise.all([connected(first), connected(second)]);
    const service = await startTestService({ redisUrl: redis.url });
    opened.push(service);
    service.app.applyPolicy(busy, 'v1');

    let allowed = 0;
    for (let i = 0; i < 450; i++) {
      const outcome =
        i % 3 === 2
          ? (await service.call({ domain, descriptors: [authenticated('user-1')] })).overallCode === 1
          : !(await (i % 3 === 0 ? first : second).limit('profile', ['authenticated'], 'user-1')).overLimit;
      if (outcome) allowed++;
    }
    // Never more than the limit; at most the two replicas' leases (4 each) refused early.
    expect(allowed).toBeLessThanOrEqual(400);
    expect(allowed).toBeGreaterThanOrEqual(400 - 2 * 4);
    const metrics = await registry.getSingleMetricAsString('sekisho_ext_authz_limit_leases_total');
    expect(metrics).toMatch(/granted="true"} [1-9]/);
    expect(first.status()).toMatchObject({ lease: { share: 0.01, max: 100, keys: 1 } });
  });

  it('decides per request with EXT_AUTHZ_LIMITS_LEASE=0%', async () => {
    const domain = `t-${randomUUID()}`;
    const registry = new Registry();
    const limits = start({ registry, lease: { fraction: 0, max: 100 } });
    const policy = limitsPolicy(domain);
    limits.apply(
      RateLimitPolicy.fromPartial({
        ...policy,
        rules: policy.rules.map((r) => ({ ...r, requestsPerWindow: 100_000 })),
      }),
    );
    await connected(limits);
    for (let i = 0; i < 20; i++) await limits.limit('profile', ['authenticated'], 'user-1');
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_limit_leases_total')).not.toMatch(/granted="/);
    expect(limits.status()).toMatchObject({ lease: { keys: 0 } });
  });

  it('opens no Redis connection until a policy has a rule, and keeps the last good rules when one is invalid', async () => {
    const limits = start();
    limits.apply(undefined);
    limits.apply(RateLimitPolicy.fromPartial({ domain: 'empty', rules: [] }));
    expect(limits.active()).toBe(false);
    expect(limits.status()).toMatchObject({ rule_count: 0, redis: null });
    expect(limits.ready()).toBe(true);

    const good = limitsPolicy(`t-${randomUUID()}`);
    limits.apply(good);
    expect(limits.active()).toBe(true);
    const twice = RateLimitPolicy.fromPartial({ ...good, rules: [...good.rules, good.rules[0] ?? {}] });
    expect(() => limits.apply(twice)).toThrow(/authenticated\/user\/60s.*more than once/);
    expect(limits.status()).toMatchObject({ rule_count: 2 });
  });

  it('answers by the failure mode while Redis cannot: allow by default, deny when the policy says so', async () => {
    // Nothing listens on port 1: every call fails at once (no offline queue).
    const down = 'redis://127.0.0.1:1';
    const allowing = start({}, down);
    allowing.apply(limitsPolicy('down-allow'));
    expect(allowing.ready()).toBe(false);
    expect((await allowing.limit('booking', ['authenticated', 'route'], 'user-1')).overLimit).toBe(false);

    const denying = start({}, down);
    denying.apply(limitsPolicy('down-deny', { storeFailureMode: StoreFailureMode.STORE_FAILURE_MODE_DENY }));
    expect((await denying.limit('booking', ['authenticated'], 'user-1')).overLimit).toBe(true);
    expect(denying.status()).toMatchObject({ failure_mode: 'deny' });
  });
});

describe('routeRequirements: sekisho.user_limits', () => {
  it.each([
    [undefined, []],
    ['', []],
    ['authenticated', ['authenticated']],
    ['route,authenticated', ['authenticated', 'route']],
    [' route , route ', ['route']],
    ['per-ip,unknown', []],
  ])('%j names %j', (value, families) => {
    const context: Record<string, string> = value === undefined ? {} : { [authzContextKeys.userLimits]: value };
    expect(routeRequirements(context).userLimits).toEqual(families);
  });
});

describe('check with per-user limits', () => {
  const projectId = 'salon-test';
  let key: SigningKey;
  beforeAll(async () => {
    key = await generateSigningKey();
  });

  function deps(limits: UserLimits) {
    const publicKey = importCertificateKey(key.certificatePem);
    const policy = compileAuthzPolicy(
      AuthzPolicy.fromPartial({
        firebase: { projectId },
        groupClaim: 'tier',
        defaultGroup: 'basic_customer',
        groups: { basic_customer: { permissions: [] } },
      }),
    );
    const registry = new Registry();
    return {
      registry,
      deps: {
        policy: () => policy,
        verify: (token: string, project: string) =>
          verifyFirebaseIdToken(token, {
            projectId: project,
            resolveKey: (kid) => (kid === key.kid ? { status: 'found', key: publicKey } : { status: 'unknown' }),
            now: Date.now(),
            clockToleranceMs: 5_000,
          }),
        logger: quiet,
        metrics: createExtAuthzMetrics(registry),
        userLimits: limits,
      },
    };
  }

  const request = (families: string | undefined, authorization?: string, auth = 'required') =>
    CheckRequest.fromPartial({
      attributes: {
        source: { address: { socketAddress: { address: '203.0.113.7', portValue: 51234 } } },
        contextExtensions: {
          [authzContextKeys.routeId]: 'booking',
          [authzContextKeys.auth]: auth,
          ...(families !== undefined ? { [authzContextKeys.userLimits]: families } : {}),
        },
        request: {
          http: {
            method: 'POST',
            path: '/api/v1/bookings',
            headers: {
              'x-request-id': 'req-7',
              'accept-language': 'en',
              ...(authorization ? { authorization } : {}),
            },
          },
        },
      },
    });

  it("refuses the verified user's request over the route's limit with the gateway's 429", async () => {
    const limits = start();
    limits.apply(limitsPolicy(`t-${randomUUID()}`));
    await connected(limits);
    const { deps: d, registry } = deps(limits);
    const token = `Bearer ${await mintIdToken(key, { projectId, uid: 'user-9' })}`;

    const first = await check(request('authenticated,route', token), d);
    expect(first.status?.code).toBe(0);
    const added = Object.fromEntries(
      (first.okResponse?.responseHeadersToAdd ?? []).map((h) => [h.header?.key, h.header?.value]),
    );
    expect(added['ratelimit-policy']).toContain('"route:booking/user/60s";q=1;w=60');

    const second = await check(request('authenticated,route', token), d);
    expect(second.status?.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(second.deniedResponse?.status?.code).toBe(429);
    const headers = Object.fromEntries(
      (second.deniedResponse?.headers ?? []).map((h) => [h.header?.key, h.header?.value]),
    );
    expect(headers['content-type']).toMatch(/^application\/json/);
    expect(Number(headers['retry-after'])).toBeGreaterThanOrEqual(1);
    const body = JSON.parse(second.deniedResponse?.body ?? '{}');
    expect(body.error).toMatchObject({
      code: 'RATE_LIMIT_EXCEEDED',
      correlation_id: 'req-7',
      retry_after: headers['retry-after'],
    });
    const denied = await registry.getSingleMetricAsString('sekisho_ext_authz_checks_total');
    expect(denied).toMatch(/code="RATE_LIMIT_EXCEEDED"[^\n]*\} 1/);

    // A route whose context names no family, and an anonymous caller, are not counted here.
    expect((await check(request(undefined, token), d)).status?.code).toBe(0);
    expect((await check(request('route', undefined, 'optional'), d)).status?.code).toBe(0);
  });
});
