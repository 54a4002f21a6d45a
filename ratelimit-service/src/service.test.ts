import { freePort } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import {
  RateLimitResponse_Code as Code,
  RateLimitResponse_RateLimit_Unit as Unit,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitUnit } from '@sekisho/proto/envoy/type/v3/ratelimit_unit';
import { RateLimitAlgorithm, RateLimitPolicy, type RateLimitRule } from '@sekisho/proto/sekisho/policy/v1/policy';
import { descriptorKeys as k, rateLimitDomain } from '@sekisho/service-kit/contract';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  anonymous,
  authenticated,
  descriptor,
  eventually,
  headersOf,
  routeForIp,
  routeForUser,
  startTestService,
  type TestService,
  testPolicy,
} from './test-helpers';

// The whole service over a real gRPC socket, with a grpc-js client (as Envoy's
// ratelimit filter calls it) and a real Redis behind it.

let redisServer: RedisHandle;
let redis: Redis;
let service: TestService;
// 10 s into a whole hour: the minute window resets in 50 s, the hour in 3590 s.
const start = Date.UTC(2026, 0, 1) + 10_000;
let now = start;

beforeAll(async () => {
  redisServer = await startRedis();
  redis = new Redis(redisServer.url);
  service = await startTestService({ redisUrl: redisServer.url, clock: () => now });
});

afterAll(async () => {
  await service?.close();
  redis?.disconnect();
  await redisServer?.stop();
});

beforeEach(async () => {
  await redis.flushall();
  now = start;
});

describe('before the first policy', () => {
  it('is not ready and allows requests (failure mode allow)', async () => {
    expect(service.app.isReady()).toBe(false);
    expect((await service.admin('/readyz')).status).toBe(503);
    const response = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
    expect(response.overallCode).toBe(Code.OK);
    expect(response.statuses.map((s) => s.code)).toEqual([Code.OK]);
    expect(await redis.keys('*')).toEqual([]);
    expect(service.logs.some((r) => r.event_type === 'ratelimit_no_policy')).toBe(true);
  });

  it('answers by RATELIMIT_NO_POLICY_MODE when it differs from the Redis failure mode', async () => {
    const other = await startTestService({
      redisUrl: redisServer.url,
      env: { RATELIMIT_REDIS_FAILURE_MODE: 'allow', RATELIMIT_NO_POLICY_MODE: 'deny' },
    });
    try {
      const response = await other.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
      expect(response.overallCode).toBe(Code.OVER_LIMIT);
      expect(headersOf(response)).toEqual({ 'retry-after': '1' });
      expect(other.app.status()).toMatchObject({ redis_failure_mode: 'allow', no_policy_mode: 'deny' });
    } finally {
      await other.close();
    }
  });

  it('becomes ready once a policy is applied, and shows its version', async () => {
    service.app.applyPolicy(testPolicy, 'v1');
    expect(service.app.isReady()).toBe(true);
    expect((await service.admin('/readyz')).status).toBe(200);
    expect(JSON.parse((await service.admin('/status')).text)).toMatchObject({
      policy_version: 'v1',
      domain: rateLimitDomain,
      rule_count: 4,
      redis: 'ready',
      redis_connected_since_start: true,
    });
  });
});

describe('ShouldRateLimit with a policy', () => {
  beforeAll(() => service.app.applyPolicy(testPolicy, 'v1'));

  it('allows an authenticated user up to the per-minute limit, with RateLimit headers', async () => {
    const response = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
    expect(response.overallCode).toBe(Code.OK);
    expect(response.statuses).toEqual([
      {
        code: Code.OK,
        currentLimit: { name: 'authenticated/user/60s', requestsPerUnit: 3, unit: Unit.MINUTE },
        limitRemaining: 2,
        durationUntilReset: { seconds: 50, nanos: 0 },
      },
    ]);
    // The current IETF draft's fields by default: every limit's policy, the tightest one's state.
    expect(headersOf(response)).toEqual({
      'ratelimit-policy': '"authenticated/user/60s";q=3;w=60, "authenticated/user/3600s";q=5;w=3600',
      ratelimit: '"authenticated/user/60s";r=2;t=50',
    });
  });

  it('answers OVER_LIMIT with Retry-After past the limit, and lets the user in again next window', async () => {
    for (let i = 0; i < 3; i++) {
      expect((await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] })).overallCode).toBe(
        Code.OK,
      );
    }
    const refused = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
    expect(refused.overallCode).toBe(Code.OVER_LIMIT);
    expect(refused.statuses[0]).toMatchObject({ code: Code.OVER_LIMIT, limitRemaining: 0 });
    expect(headersOf(refused)).toMatchObject({ ratelimit: '"authenticated/user/60s";r=0;t=50', 'retry-after': '50' });
    expect(refused.rawBody).toHaveLength(0);

    // Another user is unaffected.
    expect((await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-2')] })).overallCode).toBe(
      Code.OK,
    );

    // Next minute: the minute window is fresh, and the hour (5) has two requests left: the
    // refused one was not counted against it.
    now = start + 60_000;
    const next = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
    expect(next.overallCode).toBe(Code.OK);
    expect(headersOf(next).ratelimit).toMatch(/^"authenticated\/user\/3600s";r=1;t=\d+$/);
    const last = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
    expect(headersOf(last).ratelimit).toMatch(/^"authenticated\/user\/3600s";r=0;t=\d+$/);
    const hourOver = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-1')] });
    expect(hourOver.overallCode).toBe(Code.OVER_LIMIT);
    expect(hourOver.statuses[0]?.currentLimit).toEqual({
      name: 'authenticated/user/3600s',
      requestsPerUnit: 5,
      unit: Unit.HOUR,
    });
    expect(headersOf(hourOver)['retry-after']).toBe(String(3600 - 70));
  });

  it('answers a status per descriptor in order, OVER_LIMIT overall if any one is over', async () => {
    await service.call({ domain: rateLimitDomain, descriptors: [anonymous('203.0.113.5')] });
    await service.call({ domain: rateLimitDomain, descriptors: [anonymous('203.0.113.5')] });
    const response = await service.call({
      domain: rateLimitDomain,
      descriptors: [routeForUser('no-such-route', 'uid-1'), anonymous('203.0.113.5'), authenticated('uid-9')],
    });
    expect(response.overallCode).toBe(Code.OVER_LIMIT);
    expect(response.statuses.map((s) => s.code)).toEqual([Code.OK, Code.OVER_LIMIT, Code.OK]);
    expect(response.statuses[0]?.currentLimit).toBeUndefined();
    expect(response.statuses[1]?.currentLimit?.name).toBe('unauthenticated/ip/60s');
  });

  it('blocks an IP for block_seconds after it exceeds a route limit', async () => {
    const login = { domain: rateLimitDomain, descriptors: [routeForIp('login', '198.51.100.4')] };
    expect((await service.call(login)).overallCode).toBe(Code.OK);
    const excess = await service.call(login);
    expect(excess.overallCode).toBe(Code.OVER_LIMIT);
    expect(headersOf(excess)['retry-after']).toBe('900');
    now = start + 120_000; // two windows later, still blocked
    const blocked = await service.call(login);
    expect(blocked.overallCode).toBe(Code.OVER_LIMIT);
    // Answered from the local cache, which runs on the test's clock (120 s later); Redis's own
    // block TTL runs on real time. Either way: the block's remaining length, not a window's.
    expect(Number(headersOf(blocked)['retry-after'])).toBeGreaterThanOrEqual(780);
    expect(Number(headersOf(blocked)['retry-after'])).toBeLessThanOrEqual(900);
  });

  it('counts hits_addend', async () => {
    const response = await service.call({
      domain: rateLimitDomain,
      descriptors: [authenticated('uid-3')],
      hitsAddend: 3,
    });
    expect(response.statuses[0]?.limitRemaining).toBe(0);
    expect(response.overallCode).toBe(Code.OK);
  });

  it("counts a descriptor's own hits_addend instead of the request's, 0 deciding without counting", async () => {
    const response = await service.call({
      domain: rateLimitDomain,
      hitsAddend: 1,
      descriptors: [
        { ...authenticated('uid-4'), hitsAddend: 2 },
        { ...routeForIp('login', '198.51.100.44'), hitsAddend: 0 },
      ],
    });
    expect(response.overallCode).toBe(Code.OK);
    // 3 per minute less 2; the login limit of 1 untouched.
    expect(response.statuses.map((s) => s.limitRemaining)).toEqual([1, 1]);
    const next = await service.call({ domain: rateLimitDomain, descriptors: [routeForIp('login', '198.51.100.44')] });
    expect(next.statuses[0]?.limitRemaining).toBe(0);
    const over = await service.call({
      domain: rateLimitDomain,
      hitsAddend: 1,
      descriptors: [{ ...authenticated('uid-4'), hitsAddend: 2 }],
    });
    expect(over.overallCode).toBe(Code.OVER_LIMIT);
  });

  it('allows every descriptor of another domain without touching Redis', async () => {
    for (let i = 0; i < 5; i++) {
      const response = await service.call({ domain: 'someone-else', descriptors: [authenticated('uid-1')] });
      expect(response.overallCode).toBe(Code.OK);
      expect(response.statuses.map((s) => s.code)).toEqual([Code.OK]);
      expect(response.responseHeadersToAdd).toEqual([]);
    }
    expect(await redis.keys('*')).toEqual([]);
  });

  it('allows descriptors no rule matches, without headers or Redis keys', async () => {
    const response = await service.call({
      domain: rateLimitDomain,
      descriptors: [descriptor(['generic_key', 'x']), descriptor(['authenticated', 'true'], ['user', 'u'])],
    });
    expect(response.overallCode).toBe(Code.OK);
    expect(response.statuses.map((s) => s.code)).toEqual([Code.OK, Code.OK]);
    expect(response.responseHeadersToAdd).toEqual([]);
    expect(await redis.keys('*')).toEqual([]);
  });

  it('logs an exceeded limit as a security event without the user id or IP in clear', async () => {
    const ip = '192.0.2.77';
    const before = service.logs.length;
    for (let i = 0; i < 3; i++) await service.call({ domain: rateLimitDomain, descriptors: [anonymous(ip)] });
    const records = service.logs.slice(before).filter((r) => r.event_type === 'rate_limit_exceeded');
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      level: 'WARN',
      category: 'security',
      rule_id: 'unauthenticated/ip/60s',
      limit: 2,
      window_seconds: 60,
    });
    const entries = records[0]?.descriptor as Array<{ key: string; value: string }>;
    expect(entries.map((e) => e.key)).toEqual(['sekisho_limit', 'anonymous', 'remote_address']);
    expect(entries[0]?.value).toBe('unauthenticated');
    expect(entries[2]?.value).toMatch(/^hash:[0-9a-f]{32}$/);
    expect(JSON.stringify(service.logs)).not.toContain(ip);
  });

  it('keeps over-limit logging to a few records per rule under a flood', async () => {
    const before = service.logs.length;
    for (let i = 0; i < 30; i++) {
      await service.call({ domain: rateLimitDomain, descriptors: [authenticated('flood-user')] });
    }
    const records = service.logs.slice(before).filter((r) => r.event_type === 'rate_limit_exceeded');
    // 27 over-limit answers for each of two rules; at most 5 records per rule per interval.
    expect(records.length).toBeGreaterThan(0);
    expect(records.length).toBeLessThanOrEqual(10);
  });

  it('counts decisions per rule and result in /metrics', async () => {
    for (let i = 0; i < 4; i++) await service.call({ domain: rateLimitDomain, descriptors: [authenticated('m-1')] });
    const metrics = (await service.admin('/metrics')).text;
    expect(metrics).toMatch(
      /sekisho_ratelimit_decisions_total\{rule="authenticated\/user\/60s",result="over_limit"[^}]*\} \d+/,
    );
    expect(metrics).toMatch(
      /sekisho_ratelimit_decisions_total\{rule="authenticated\/user\/60s",result="ok"[^}]*\} \d+/,
    );
    expect(metrics).toMatch(/sekisho_ratelimit_policy_info\{version="v1",domain="sekisho"[^}]*\} 1/);
    expect(metrics).toMatch(/sekisho_ratelimit_redis_up\{[^}]*\} 1/);
    expect(metrics).toMatch(/sekisho_ratelimit_request_duration_seconds_count\{[^}]*code="over_limit"[^}]*\} \d+/);
  });

  it('refuses an invalid policy and keeps the one in force, reporting the error until the next good one', async () => {
    const broken = RateLimitPolicy.fromPartial({
      domain: rateLimitDomain,
      rules: [{ id: 'x', match: [{ key: 'user', value: '' }], requestsPerWindow: 1, windowSeconds: 0 }],
    });
    expect(() => service.app.applyPolicy(broken, 'v2')).toThrow(/window_seconds/);
    expect(service.app.status()).toMatchObject({
      policy_version: 'v1',
      rule_count: 4,
      policy_last_error: { version: 'v2', error: expect.stringContaining('window_seconds') },
    });
    expect((await service.admin('/metrics')).text).toMatch(/sekisho_ratelimit_policy_load_error\{[^}]*\} 1/);
    service.app.applyPolicy(testPolicy, 'v3');
    expect(service.app.status()).toMatchObject({ policy_version: 'v3', policy_last_error: null });
    expect((await service.admin('/metrics')).text).toMatch(/sekisho_ratelimit_policy_load_error\{[^}]*\} 0/);
  });
});

describe('ShouldRateLimit with shadow rules and other algorithms', () => {
  let shadowed: TestService;
  const route = (id: string, extra: Partial<RateLimitRule>) => ({
    id,
    match: [
      { key: k.route, value: 'auth' },
      { key: k.remoteAddress, value: '' },
    ],
    requestsPerWindow: 1,
    windowSeconds: 60,
    ...extra,
  });

  beforeAll(async () => {
    shadowed = await startTestService({ redisUrl: redisServer.url, clock: () => now });
    shadowed.app.applyPolicy(
      RateLimitPolicy.fromPartial({
        domain: rateLimitDomain,
        rules: [
          route('route:auth/ip/60s', { algorithm: RateLimitAlgorithm.SLIDING_WINDOW, shadow: true }),
          route('route:auth/ip/1s', {
            algorithm: RateLimitAlgorithm.TOKEN_BUCKET,
            windowSeconds: 1,
            requestsPerWindow: 10,
            burst: 3,
          }),
        ],
      }),
      'shadow-1',
    );
    // Until its Redis connection is up the service answers by its failure mode (allow), which
    // would count nothing: wait for it (readiness needs Redis once and a policy).
    await eventually(() => shadowed.app.isReady());
  });

  afterAll(async () => {
    await shadowed?.close();
  });

  it('answers OK for a shadow rule over its limit, and logs and counts it as shadow_mode', async () => {
    const login = { domain: rateLimitDomain, descriptors: [routeForIp('auth', '198.51.100.9')] };
    expect((await shadowed.call(login)).overallCode).toBe(Code.OK);
    const second = await shadowed.call(login);
    expect(second.overallCode).toBe(Code.OK);
    expect(second.statuses[0]?.code).toBe(Code.OK);
    expect(headersOf(second)['retry-after']).toBeUndefined();
    const record = shadowed.logs.find((r) => r.event_type === 'rate_limit_exceeded');
    expect(record).toMatchObject({ rule_id: 'route:auth/ip/60s', shadow_mode: true, algorithm: 'sliding' });
    expect((await shadowed.admin('/metrics')).text).toMatch(
      /sekisho_ratelimit_decisions_total\{rule="route:auth\/ip\/60s",result="shadow_mode"[^}]*\} 1/,
    );
    // The enforced token bucket (burst 3) counted both requests and refuses the fourth.
    expect((await shadowed.call(login)).overallCode).toBe(Code.OK);
    const fourth = await shadowed.call(login);
    expect(fourth.overallCode).toBe(Code.OVER_LIMIT);
    expect(fourth.statuses[0]?.currentLimit?.name).toBe('route:auth/ip/1s');
  });

  it('never refuses for shadow rules alone when Redis is down, even in deny mode', async () => {
    // A port nothing listens on: every limiter call fails at once (no offline queue).
    const down = await startTestService({
      redisUrl: `redis://127.0.0.1:${await freePort()}`,
      env: { RATELIMIT_REDIS_FAILURE_MODE: 'deny' },
    });
    try {
      down.app.applyPolicy(
        RateLimitPolicy.fromPartial({
          domain: rateLimitDomain,
          rules: [
            route('route:auth/ip/60s', { shadow: true }),
            {
              ...route('route:send/ip/60s', {}),
              match: [
                { key: k.route, value: 'send' },
                { key: k.remoteAddress, value: '' },
              ],
            },
          ],
        }),
        'down-1',
      );
      const response = await down.call({
        domain: rateLimitDomain,
        descriptors: [routeForIp('auth', '198.51.100.9'), routeForIp('send', '198.51.100.9')],
      });
      expect(response.statuses.map((s) => s.code)).toEqual([Code.OK, Code.OVER_LIMIT]);
    } finally {
      await down.close();
    }
  });
});

describe("a descriptor's limit override in the control plane's domain", () => {
  // Envoy sends `limit` when a route's rate-limit action carries one (dynamic metadata).
  const withOverride = (uid: string, requestsPerUnit: number) => ({
    domain: rateLimitDomain,
    descriptors: [{ ...authenticated(uid), limit: { requestsPerUnit, unit: RateLimitUnit.MINUTE } }],
  });

  it('is ignored unless the definition allows it: the policy limits hold', async () => {
    service.app.applyPolicy(testPolicy, 'no-override');
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push((await service.call(withOverride('uid-o1', 10))).overallCode);
    expect(answers).toEqual([Code.OK, Code.OK, Code.OK, Code.OVER_LIMIT]);
  });

  it('replaces the descriptor rules with the override when allowed, counted on a key of its own', async () => {
    service.app.applyPolicy(
      RateLimitPolicy.fromPartial({ ...testPolicy, allowDescriptorLimitOverride: true }),
      'override',
    );
    const first = await service.call(withOverride('uid-o2', 1));
    expect(first.statuses[0]).toMatchObject({
      code: Code.OK,
      currentLimit: { requestsPerUnit: 1, unit: Unit.MINUTE },
      limitRemaining: 0,
    });
    expect((await service.call(withOverride('uid-o2', 1))).overallCode).toBe(Code.OVER_LIMIT);
    // A descriptor without an override still gets the policy's 3 per minute.
    expect((await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-o2')] })).overallCode).toBe(
      Code.OK,
    );
    // No user id in clear in the key, and the override's own definition tag.
    const keys = await redis.keys('sekisho:rl:*:override:*');
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(/^sekisho:rl:\{[^}]+\}:override:[0-9a-f]{16}:fixed:60s:1:[0-9a-f]{32}$/);
  });
});
