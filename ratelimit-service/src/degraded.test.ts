import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RedisHandle, type RedisOutageControl, startRedis } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitPolicy, StoreFailureMode } from '@sekisho/proto/sekisho/policy/v1/policy';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  authenticated,
  descriptor,
  eventually,
  headersOf,
  routeForIp,
  startTestService,
  type TestService,
  testPolicy,
} from './test-helpers';

// Every failure mode against a real redis-server that is killed (connection refused) or
// frozen with SIGSTOP (commands time out), with the circuit breaker and the local cache in
// play. Each answer must arrive within a gRPC deadline far shorter than a hanging Redis
// would take; the breaker's work shows in the Redis round trips that stop while it is open.
// With REDIS_URL set, startRedis hands out a server this process cannot stop: skipped.

/** Envoy gives the service 100 ms by default; the loaded test machine gets ten times that. */
const deadlineMs = 1000;
// A timeout well above a loaded machine's Redis round trip (a healthy call must never time out
// here) and well below the deadline (a frozen Redis costs at most this per call).
const breakerEnv = {
  RATELIMIT_REDIS_TIMEOUT: '250ms',
  RATELIMIT_BREAKER_FAILURES: '3',
  RATELIMIT_BREAKER_OPEN_FOR: '300ms',
};

let users = 0;
let ips = 0;
const freshUser = () => ({ domain: rateLimitDomain, descriptors: [authenticated(`uid-${++users}`)] });
const freshIp = () => `198.51.100.${++ips}`;
const login = (ip: string) => ({ domain: rateLimitDomain, descriptors: [routeForIp('login', ip)] });

/** The value of one sample of a metric, the labels given as they appear (`state="open"`). */
const sample = (text: string, name: string, labels = ''): number => {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return Number.NaN;
};
const redisCalls = async (service: TestService) =>
  sample((await service.admin('/metrics')).text, 'sekisho_ratelimit_redis_duration_seconds_count', 'outcome="ok"') +
  (sample(
    (await service.admin('/metrics')).text,
    'sekisho_ratelimit_redis_duration_seconds_count',
    'outcome="error"',
  ) || 0);

const readyDetails = async (service: TestService) => JSON.parse((await service.admin('/readyz')).text).details;

describe.skipIf(Boolean(process.env.REDIS_URL)).each(['allow', 'deny', 'local'] as const)(
  'RATELIMIT_REDIS_FAILURE_MODE=%s with the circuit breaker',
  (mode) => {
    let redisServer: RedisHandle;
    let control: RedisOutageControl;
    let service: TestService;

    /** What a fresh user's first request gets while Redis cannot answer. */
    const expectModeAnswer = async () => {
      const response = await service.call(freshUser(), deadlineMs);
      if (mode === 'deny') {
        expect(response.overallCode).toBe(Code.OVER_LIMIT);
        expect(headersOf(response)).toEqual({ 'retry-after': '1' });
      } else if (mode === 'allow') {
        expect(response.overallCode).toBe(Code.OK);
        expect(headersOf(response)).toEqual({});
      } else {
        // Decided in memory: 3 per minute and 5 per hour are 1 each on each of 3 replicas.
        expect(response.overallCode).toBe(Code.OK);
        expect(response.statuses[0]).toMatchObject({ limitRemaining: 0 });
        expect(headersOf(response).ratelimit).toMatch(/;r=0;t=\d+$/);
      }
    };

    const expectRedisAnswer = async () => {
      const response = await service.call(freshUser(), deadlineMs);
      expect(response.overallCode).toBe(Code.OK);
      expect(response.statuses[0]).toMatchObject({ limitRemaining: 2 });
    };

    const expectBreakerOpenAndQuiet = async () => {
      await eventually(() => service.app.status().redis_breaker === 'open');
      expect(await readyDetails(service)).toMatchObject({
        redis_breaker: 'open',
        mode_in_force: mode,
        failure_mode: mode,
      });
      const metrics = (await service.admin('/metrics')).text;
      expect(sample(metrics, 'sekisho_ratelimit_redis_breaker_state', 'state="open"')).toBe(1);
      expect(sample(metrics, 'sekisho_ratelimit_mode', `mode="${mode}"`)).toBe(1);
      expect(sample(metrics, 'sekisho_ratelimit_mode', 'mode="redis"')).toBe(0);
    };

    beforeAll(async () => {
      redisServer = await startRedis();
      if (!redisServer.control) throw new Error(`no outage controls for a Redis from ${redisServer.source}`);
      control = redisServer.control;
      service = await startTestService({
        redisUrl: redisServer.url,
        env: { ...breakerEnv, RATELIMIT_REDIS_FAILURE_MODE: mode, RATELIMIT_LOCAL_REPLICAS: '3' },
      });
      await eventually(() => service.app.status().redis === 'ready');
      service.app.applyPolicy(testPolicy, 'v1');
    });

    afterAll(async () => {
      await service?.close();
      await redisServer?.stop();
    });

    it('answers by the mode within the deadline while Redis is killed, stops asking it, and recovers', async () => {
      await expectRedisAnswer();
      expect(await readyDetails(service)).toMatchObject({ redis_breaker: 'closed', mode_in_force: 'redis' });

      await control.down();
      for (let i = 0; i < 5; i++) await expectModeAnswer();
      await expectBreakerOpenAndQuiet();
      // Open: twenty answers, and no round trips but the half-open probes (one per 300 ms).
      const before = await redisCalls(service);
      const started = Date.now();
      for (let i = 0; i < 20; i++) await expectModeAnswer();
      const probes = Math.floor((Date.now() - started) / 300) + 1;
      expect((await redisCalls(service)) - before).toBeLessThanOrEqual(probes);
      expect(service.logs.some((r) => r.event_type === 'redis_breaker_state' && r.state === 'open')).toBe(true);

      await control.up();
      // The reconnect lets the next request probe; its success closes the breaker.
      await eventually(() => service.app.status().redis === 'ready');
      const deadline = Date.now() + 10_000;
      while (service.app.status().redis_breaker !== 'closed' && Date.now() < deadline) await service.call(freshUser());
      expect(service.app.status().redis_breaker).toBe('closed');
      await expectRedisAnswer();
      expect(service.logs.some((r) => r.event_type === 'redis_breaker_state' && r.state === 'closed')).toBe(true);
    });

    it('answers by the mode within the deadline while Redis is frozen, half-opens, and closes after it thaws', async () => {
      await expectRedisAnswer();
      control.pause();
      try {
        // The first three time out (250 ms each), then the open breaker answers at once.
        for (let i = 0; i < 5; i++) await expectModeAnswer();
        await expectBreakerOpenAndQuiet();
        expect(service.app.status().redis).toBe('ready'); // connected, just silent
        // After RATELIMIT_BREAKER_OPEN_FOR one request probes (and times out): half-open, open again.
        await eventually(() => {
          void service.call(freshUser(), deadlineMs).catch(() => undefined);
          return service.logs.some((r) => r.event_type === 'redis_breaker_state' && r.state === 'half_open');
        });
        await expectModeAnswer();
      } finally {
        control.resume();
      }
      const deadline = Date.now() + 10_000;
      while (service.app.status().redis_breaker !== 'closed' && Date.now() < deadline) await service.call(freshUser());
      expect(service.app.status().redis_breaker).toBe('closed');
      await expectRedisAnswer();
    });

    it('keeps a block known before the outage for as long as it lasts, Redis killed or frozen', async () => {
      const ip = freshIp();
      expect((await service.call(login(ip))).overallCode).toBe(Code.OK);
      const excess = await service.call(login(ip));
      expect(excess.overallCode).toBe(Code.OVER_LIMIT);
      expect(headersOf(excess)['retry-after']).toBe('900');

      await control.down();
      try {
        const blocked = await service.call(login(ip), deadlineMs);
        expect(blocked.overallCode).toBe(Code.OVER_LIMIT);
        expect(Number(headersOf(blocked)['retry-after'])).toBeGreaterThan(850);
      } finally {
        await control.up();
      }
      await eventually(() => service.app.status().redis === 'ready');
      control.pause();
      try {
        const blocked = await service.call(login(ip), deadlineMs);
        expect(blocked.overallCode).toBe(Code.OVER_LIMIT);
      } finally {
        control.resume();
      }
      const metrics = (await service.admin('/metrics')).text;
      expect(
        sample(metrics, 'sekisho_ratelimit_over_limit_with_local_cache_total', 'rule="route:login/ip/60s"'),
      ).toBeGreaterThanOrEqual(2);
    });

    if (mode === 'local') {
      it('enforces the limits in memory during the outage, blocks it starts included, and drops its counts after', async () => {
        await control.down();
        try {
          await eventually(() => service.app.status().redis !== 'ready');
          const user = { domain: rateLimitDomain, descriptors: [authenticated('uid-outage')] };
          // 3 per minute over 3 replicas: 1 here.
          expect((await service.call(user, deadlineMs)).overallCode).toBe(Code.OK);
          const refused = await service.call(user, deadlineMs);
          expect(refused.overallCode).toBe(Code.OVER_LIMIT);
          expect(Number(headersOf(refused)['retry-after'])).toBeGreaterThan(0);

          // A block earned during the outage: 1 login per minute, then 15 minutes.
          const ip = freshIp();
          expect((await service.call(login(ip), deadlineMs)).overallCode).toBe(Code.OK);
          expect(headersOf(await service.call(login(ip), deadlineMs))['retry-after']).toBe('900');
          expect((await service.call(login(ip), deadlineMs)).overallCode).toBe(Code.OVER_LIMIT);
          expect(service.app.status()).toMatchObject({ mode_in_force: 'local', local_replicas: 3 });

          await control.up();
          await eventually(() => service.app.status().redis === 'ready');
          const deadline = Date.now() + 10_000;
          while (service.app.status().redis_breaker !== 'closed' && Date.now() < deadline)
            await service.call(freshUser());
          // Redis counts again (it never saw the outage's requests); the block stays.
          expect((await service.call(user)).overallCode).toBe(Code.OK);
          expect((await service.call(login(ip))).overallCode).toBe(Code.OVER_LIMIT);
        } finally {
          await control.up();
        }
      });
    }
  },
);

describe.skipIf(Boolean(process.env.REDIS_URL))('the local cache of known refusals', () => {
  let redisServer: RedisHandle;
  let control: RedisOutageControl;
  let service: TestService;

  beforeAll(async () => {
    redisServer = await startRedis();
    if (!redisServer.control) throw new Error(`no outage controls for a Redis from ${redisServer.source}`);
    control = redisServer.control;
    service = await startTestService({
      redisUrl: redisServer.url,
      env: { ...breakerEnv, RATELIMIT_REDIS_FAILURE_MODE: 'allow' },
    });
    await eventually(() => service.app.status().redis === 'ready');
    service.app.applyPolicy(testPolicy, 'v1');
  });

  afterAll(async () => {
    await service?.close();
    await redisServer?.stop();
  });

  it('answers a key over its limit without Redis until the window ends, and not after a change of the limit', async () => {
    const user = { domain: rateLimitDomain, descriptors: [authenticated('uid-cache')] };
    for (let i = 0; i < 3; i++) expect((await service.call(user)).overallCode).toBe(Code.OK);
    expect((await service.call(user)).overallCode).toBe(Code.OVER_LIMIT);

    // Frozen Redis would time out: the refusal comes from the cache, at once, with its figures.
    const callsBefore = await redisCalls(service);
    control.pause();
    try {
      const cached = await service.call(user, deadlineMs);
      expect(cached.overallCode).toBe(Code.OVER_LIMIT);
      expect(cached.statuses[0]).toMatchObject({ code: Code.OVER_LIMIT, limitRemaining: 0 });
      expect(Number(headersOf(cached)['retry-after'])).toBeGreaterThan(0);
    } finally {
      control.resume();
    }
    expect(await redisCalls(service)).toBe(callsBefore);
    const metrics = (await service.admin('/metrics')).text;
    expect(
      sample(metrics, 'sekisho_ratelimit_over_limit_with_local_cache_total', 'rule="authenticated/user/60s"'),
    ).toBe(1);
    expect(sample(metrics, 'sekisho_ratelimit_over_limit_total', 'rule="authenticated/user/60s"')).toBe(2);
    expect(sample(metrics, 'sekisho_ratelimit_total_hits_total', 'rule="authenticated/user/60s"')).toBe(5);
    expect(sample(metrics, 'sekisho_ratelimit_within_limit_total', 'rule="authenticated/user/60s"')).toBe(3);
    // Near the limit: less than 20% of it (0.6 of 3) left, so only the third request.
    expect(sample(metrics, 'sekisho_ratelimit_near_limit_total', 'rule="authenticated/user/60s"')).toBe(1);

    // The limit doubles: the entry kept under 3 per minute does not answer for 6.
    const raised = RateLimitPolicy.fromPartial({
      ...testPolicy,
      rules: testPolicy.rules.map((r) => (r.id === 'authenticated/user/60s' ? { ...r, requestsPerWindow: 6 } : r)),
    });
    service.app.applyPolicy(raised, 'v2');
    const after = await service.call(user);
    expect(after.overallCode).toBe(Code.OK);
    expect(await redisCalls(service)).toBe(callsBefore + 1);
  });

  it('takes the failure mode, replica count and override permission from the policy when it carries them', async () => {
    service.app.applyPolicy(
      RateLimitPolicy.fromPartial({
        ...testPolicy,
        storeFailureMode: StoreFailureMode.STORE_FAILURE_MODE_LOCAL,
        localReplicas: 4,
      }),
      'v3',
    );
    expect(service.app.status()).toMatchObject({ redis_failure_mode: 'local', local_replicas: 4 });
    expect(await readyDetails(service)).toMatchObject({ failure_mode: 'local', mode_in_force: 'redis' });
    service.app.applyPolicy(testPolicy, 'v4');
    expect(service.app.status()).toMatchObject({ redis_failure_mode: 'allow', local_replicas: 1 });
  });
});

describe.skipIf(Boolean(process.env.REDIS_URL))('a file domain in local mode', () => {
  let redisServer: RedisHandle;
  let control: RedisOutageControl;
  let service: TestService;
  let dir: string;

  beforeAll(async () => {
    redisServer = await startRedis();
    if (!redisServer.control) throw new Error(`no outage controls for a Redis from ${redisServer.source}`);
    control = redisServer.control;
    dir = await mkdtemp(join(tmpdir(), 'sekisho-degraded-files-'));
    await writeFile(
      join(dir, 'edge.yaml'),
      'domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 4 }\n',
    );
    service = await startTestService({
      redisUrl: redisServer.url,
      env: {
        ...breakerEnv,
        RATELIMIT_CONFIG_DIR: dir,
        RATELIMIT_REDIS_FAILURE_MODE: 'local',
        RATELIMIT_LOCAL_REPLICAS: '2',
      },
    });
    await eventually(() => service.app.status().redis === 'ready');
  });

  afterAll(async () => {
    await service?.close();
    await redisServer?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("keeps the file's limit, divided by the replicas, while Redis is killed", async () => {
    const call = () =>
      service.call({ domain: 'edge', descriptors: [descriptor(['remote_address', '203.0.113.9'])] }, deadlineMs);
    expect((await call()).overallCode).toBe(Code.OK);
    await control.down();
    try {
      await eventually(() => service.app.status().redis !== 'ready');
      // 4 per minute over 2 replicas: 2 here, counted from the outage's start.
      const codes = [];
      for (let i = 0; i < 3; i++) codes.push((await call()).overallCode);
      expect(codes).toEqual([Code.OK, Code.OK, Code.OVER_LIMIT]);
    } finally {
      await control.up();
    }
  });
});
