import { type RedisHandle, type RedisOutageControl, startRedis } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  authenticated,
  eventually,
  eventuallyAsync,
  headersOf,
  metricValue,
  routeForIp,
  startTestService,
  type TestService,
  testPolicy,
} from './test-helpers';

// Two replicas of the service on one real redis-server, in the local failure mode: a block
// earned through one is known to the other (announced as it starts, or read from the index
// of active blocks at start-up), so an attacker whose requests move to another replica
// during a Redis outage stays blocked. A shared test clock moves both replicas' time (and
// the script's, which is given the same clock) past a block's end without waiting.
// With REDIS_URL set, startRedis hands out a server this process cannot stop: skipped.

const deadlineMs = 1000;
const env = {
  RATELIMIT_REDIS_FAILURE_MODE: 'local',
  RATELIMIT_LOCAL_REPLICAS: '2',
  RATELIMIT_REDIS_TIMEOUT: '250ms',
  RATELIMIT_BREAKER_FAILURES: '3',
  RATELIMIT_BREAKER_OPEN_FOR: '300ms',
};

let ips = 0;
let users = 0;
const freshIp = () => `203.0.113.${++ips}`;
const login = (ip: string) => ({ domain: rateLimitDomain, descriptors: [routeForIp('login', ip)] });
const freshUser = () => ({ domain: rateLimitDomain, descriptors: [authenticated(`peer-uid-${++users}`)] });

describe.skipIf(Boolean(process.env.REDIS_URL))('blocks known to every replica (local failure mode)', () => {
  let redisServer: RedisHandle;
  let control: RedisOutageControl;
  let a: TestService;
  let b: TestService;
  let now = Date.UTC(2026, 0, 5, 9, 0, 0);
  const clock = () => now;

  /** Redis decides again on every replica (the breaker closed after the last test's outage). */
  const redisDecides = async (...services: TestService[]) => {
    for (const service of services) {
      await eventually(() => service.app.status().redis === 'ready');
      const deadline = Date.now() + 10_000;
      while (service.app.status().mode_in_force !== 'redis' && Date.now() < deadline) await service.call(freshUser());
      expect(service.app.status().mode_in_force).toBe('redis');
    }
  };
  /** A earns a 15-minute block for a fresh address (1 login per minute), and B learns it. */
  const blockThroughA = async () => {
    const ip = freshIp();
    const learned = await metricValue(b, 'sekisho_ratelimit_blocks_learned_total');
    expect((await a.call(login(ip))).overallCode).toBe(Code.OK);
    const excess = await a.call(login(ip));
    expect(excess.overallCode).toBe(Code.OVER_LIMIT);
    expect(headersOf(excess)['retry-after']).toBe('900');
    await eventuallyAsync(async () => (await metricValue(b, 'sekisho_ratelimit_blocks_learned_total')) === learned + 1);
    return ip;
  };

  beforeAll(async () => {
    redisServer = await startRedis();
    if (!redisServer.control) throw new Error(`no outage controls for a Redis from ${redisServer.source}`);
    control = redisServer.control;
    [a, b] = await Promise.all([
      startTestService({ redisUrl: redisServer.url, env, clock }),
      startTestService({ redisUrl: redisServer.url, env, clock }),
    ]);
    a.app.applyPolicy(testPolicy, 'v1');
    b.app.applyPolicy(testPolicy, 'v1');
    await redisDecides(a, b);
  });

  afterEach(async () => {
    await control.up();
    b.app.applyPolicy(testPolicy, 'v1');
    await redisDecides(a, b);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await redisServer?.stop();
  });

  it('refuses on B, during an outage, a client blocked through A, for the time the block has left', async () => {
    const ip = await blockThroughA();
    await control.down();
    now += 100_000;
    const blocked = await b.call(login(ip), deadlineMs);
    expect(blocked.overallCode).toBe(Code.OVER_LIMIT);
    expect(headersOf(blocked)['retry-after']).toBe('800');
    // B is in the local mode, not refusing everything: another address still logs in.
    expect((await b.call(login(freshIp()), deadlineMs)).overallCode).toBe(Code.OK);
    expect(b.app.status()).toMatchObject({ mode_in_force: 'local' });
    expect(b.app.status().local_known_blocks).toBeGreaterThanOrEqual(1);
  });

  it('teaches a replica started after the block the blocks still active', async () => {
    const ip = await blockThroughA();
    const c = await startTestService({ redisUrl: redisServer.url, env, clock });
    try {
      c.app.applyPolicy(testPolicy, 'v1');
      await eventuallyAsync(async () => (await metricValue(c, 'sekisho_ratelimit_blocks_loaded_total')) >= 1);
      await control.down();
      now += 60_000;
      const blocked = await c.call(login(ip), deadlineMs);
      expect(blocked.overallCode).toBe(Code.OVER_LIMIT);
      expect(headersOf(blocked)['retry-after']).toBe('840');
    } finally {
      await c.close();
    }
  });

  it('lifts an expired block on every replica', async () => {
    const ip = await blockThroughA();
    await control.down();
    now += 900_001;
    expect((await a.call(login(ip), deadlineMs)).overallCode).toBe(Code.OK);
    expect((await b.call(login(ip), deadlineMs)).overallCode).toBe(Code.OK);
  });

  it('does not answer a changed limit from a block earned under the old one', async () => {
    const ip = await blockThroughA();
    const changed = RateLimitPolicy.fromPartial({
      ...testPolicy,
      rules: testPolicy.rules.map((rule) =>
        rule.id === 'route:login/ip/60s' ? { ...rule, requestsPerWindow: 4 } : rule,
      ),
    });
    b.app.applyPolicy(changed, 'v2');
    await control.down();
    // B decides the changed rule in memory (4 per minute over 2 replicas); A still holds the block.
    expect((await b.call(login(ip), deadlineMs)).overallCode).toBe(Code.OK);
    expect((await a.call(login(ip), deadlineMs)).overallCode).toBe(Code.OVER_LIMIT);
  });
});
