import { type RedisHandle, type RedisOutageControl, startRedis } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadRateLimitConfig } from '../config';
import { authenticated, eventually, headersOf, startTestService, type TestService, testPolicy } from '../test-helpers';
import { CircuitBreaker } from './breaker';
import { counterKey, createValueHasher } from './keys';
import { LocalCache } from './local-cache';
import { LocalLimiter } from './local-limiter';
import { createRedisClient, type RedisConnection, RedisFault } from './redis-client';
import { RedisLimiter } from './redis-limiter';
import { ResilientLimiter, StoreUnavailableError } from './resilient-limiter';
import type { LimitCheck, LimitRule } from './types';

// Batching against a real redis-server: the decisions asked for in one event-loop turn (here:
// hit() called several times before anything is awaited) share one script call, and each is
// decided as if alone. Calls are counted with INFO commandstats after CONFIG RESETSTAT.

let server: RedisHandle;
let redis: Redis;
let now: number;
const start = Date.UTC(2026, 0, 1);
const hash = createValueHasher();

const rule = (id: string, limit: number, domain = 'shop', extra: Partial<LimitRule> = {}): LimitRule => ({
  id,
  domain,
  requestsPerWindow: limit,
  windowSeconds: 60,
  blockSeconds: 0,
  ...extra,
});

/** Script calls (EVALSHA, EVAL) since the last CONFIG RESETSTAT. */
async function scriptCalls(on: Redis = redis): Promise<{ evalsha: number; eval: number; failedEvalsha: number }> {
  const stats = String(await on.info('commandstats'));
  const field = (command: string, name: string) =>
    Number(new RegExp(`cmdstat_${command}:.*?\\b${name}=(\\d+)`).exec(stats)?.[1] ?? 0);
  return {
    evalsha: field('evalsha', 'calls'),
    eval: field('eval', 'calls'),
    failedEvalsha: field('evalsha', 'failed_calls'),
  };
}

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { lazyConnect: true });
  await redis.connect();
});

afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

beforeEach(async () => {
  await redis.flushall();
  now = start + 1_000;
});

/** A limiter that records every script call's size (the batch-size metric's hook). */
function batchingLimiter(opts: { maxBatch?: number; on?: RedisConnection } = {}) {
  const sizes: number[] = [];
  const limiter = new RedisLimiter({
    redis: opts.on ?? redis,
    hashValues: hash,
    clock: () => now,
    maxBatch: opts.maxBatch,
    hooks: { scriptCall: (_ok, _seconds, requests) => sizes.push(requests) },
  });
  return { limiter, sizes };
}

describe('batching over a standalone Redis', () => {
  it('sends the requests of one turn as one EVALSHA, each counted in order', async () => {
    const { limiter, sizes } = batchingLimiter({ maxBatch: 16 });
    const perUser = rule('per-user', 100);
    const shared = rule('shared', 100);
    await limiter.hit([{ rule: shared, values: [] }], 1); // loads the script (EVALSHA, NOSCRIPT, EVAL)
    await redis.config('RESETSTAT');
    sizes.length = 0;

    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        limiter.hit(
          [
            { rule: shared, values: [] },
            { rule: perUser, values: [`u${i % 2}`] },
          ],
          1,
        ),
      ),
    );
    expect(await scriptCalls()).toMatchObject({ evalsha: 1, eval: 0 });
    expect(sizes).toEqual([16]);
    // Decided one after the other, in the order asked: the shared counter goes down by one each.
    expect(answers.map((a) => a[0]?.remaining)).toEqual(Array.from({ length: 16 }, (_, i) => 98 - i));
    expect(answers.map((a) => a[1]?.remaining)).toEqual(Array.from({ length: 16 }, (_, i) => 99 - Math.floor(i / 2)));
    expect(await redis.hget(counterKey(shared, hash([])), 'c')).toBe('17');
    expect(await redis.hget(counterKey(perUser, hash(['u0'])), 'c')).toBe('8');
  });

  it('batches requests of several domains (one server: no slots)', async () => {
    const { limiter } = batchingLimiter();
    const rules = ['shop', 'admin', 'bench'].map((domain) => rule(`${domain}-route`, 10, domain));
    await limiter.hit([{ rule: rules[0] as LimitRule, values: [] }], 1);
    await redis.config('RESETSTAT');
    const answers = await Promise.all(rules.map((r) => limiter.hit([{ rule: r, values: ['u'] }], 1)));
    expect(await scriptCalls()).toMatchObject({ evalsha: 1, eval: 0 });
    expect(answers.map((a) => a[0]?.remaining)).toEqual([9, 9, 9]);
    for (const r of rules) expect(await redis.hget(counterKey(r, hash(['u'])), 'c')).toBe('1');
  });

  it('counts nothing of a refused request while the others of the batch count', async () => {
    const { limiter } = batchingLimiter();
    // A route allowing 2 a minute, shared, and per-user limits beside it.
    const route = rule('route', 2);
    const perUser = rule('route/user', 10);
    const slidingUser = rule('route/user/sliding', 10, 'shop', { algorithm: 'sliding' });
    const bucketUser = rule('route/user/bucket', 10, 'shop', { algorithm: 'tokenBucket' });
    const checks = (user: string): LimitCheck[] => [
      { rule: route, values: [] },
      { rule: perUser, values: [user] },
      { rule: slidingUser, values: [user] },
      { rule: bucketUser, values: [user] },
    ];
    const answers = await Promise.all(['a', 'b', 'c', 'd'].map((user) => limiter.hit(checks(user), 1)));
    expect(answers.map((a) => a.map((d) => d.overLimit))).toEqual([
      [false, false, false, false],
      [false, false, false, false],
      [true, false, false, false],
      [true, false, false, false],
    ]);
    expect(await redis.hget(counterKey(route, hash([])), 'c')).toBe('2');
    for (const user of ['a', 'b']) {
      expect(await redis.hget(counterKey(perUser, hash([user])), 'c')).toBe('1');
      expect(await redis.zcard(counterKey(slidingUser, hash([user])))).toBe(1);
      expect(await redis.exists(counterKey(bucketUser, hash([user])))).toBe(1);
    }
    // The refused users' counters were never written.
    for (const user of ['c', 'd'])
      for (const r of [perUser, slidingUser, bucketUser])
        expect(await redis.exists(counterKey(r, hash([user])))).toBe(0);
  });

  it('keeps a request with a descriptor of its own addend apart from the batch', async () => {
    const { limiter } = batchingLimiter();
    const r = rule('r', 10);
    const [first, second, third] = await Promise.all([
      limiter.hit([{ rule: r, values: ['u'] }], 3),
      limiter.hit([{ rule: r, values: ['u'], addend: 0 }], 1),
      limiter.hit([{ rule: r, values: ['u'] }], 0),
    ]);
    expect([first?.[0]?.remaining, second?.[0]?.remaining, third?.[0]?.remaining]).toEqual([7, 7, 6]);
  });

  it('sends a batch once it holds maxBatch requests, the rest at the end of the turn', async () => {
    const { limiter, sizes } = batchingLimiter({ maxBatch: 4 });
    const r = rule('r', 100);
    await limiter.hit([{ rule: r, values: [] }], 1);
    await redis.config('RESETSTAT');
    sizes.length = 0;
    const answers = await Promise.all(Array.from({ length: 10 }, () => limiter.hit([{ rule: r, values: [] }], 1)));
    expect(sizes).toEqual([4, 4, 2]);
    expect((await scriptCalls()).evalsha).toBe(3);
    expect(answers.map((a) => a[0]?.remaining)).toEqual(Array.from({ length: 10 }, (_, i) => 98 - i));
  });

  it('reloads the script for a batch after SCRIPT FLUSH', async () => {
    const { limiter, sizes } = batchingLimiter({ maxBatch: 16 });
    const r = rule('r', 100);
    await limiter.hit([{ rule: r, values: [] }], 1);
    await redis.script('FLUSH');
    await redis.config('RESETSTAT');
    sizes.length = 0;
    const answers = await Promise.all(Array.from({ length: 8 }, () => limiter.hit([{ rule: r, values: [] }], 1)));
    // One EVALSHA met NOSCRIPT, one EVAL carried the whole batch again.
    expect(await scriptCalls()).toEqual({ evalsha: 1, failedEvalsha: 1, eval: 1 });
    expect(sizes).toEqual([8]);
    expect(answers.map((a) => a[0]?.remaining)).toEqual(Array.from({ length: 8 }, (_, i) => 98 - i));
  });

  it('batches requests that each carry their test clock (the windows follow each request)', async () => {
    const { limiter } = batchingLimiter();
    const r = rule('r', 5);
    now = start + 59_000;
    const before = limiter.hit([{ rule: r, values: [] }], 1);
    now = start + 60_000; // the next minute: a new window for the second request
    const after = limiter.hit([{ rule: r, values: [] }], 1);
    expect([(await before)[0]?.resetSeconds, (await after)[0]?.resetSeconds]).toEqual([1, 60]);
  });

  it('on Redis clock (no test clock) decides a batch with one TIME', async () => {
    const limiter = new RedisLimiter({ redis, hashValues: hash });
    const r = rule('r', 5);
    await limiter.hit([{ rule: r, values: [] }], 1);
    await redis.config('RESETSTAT');
    const answers = await Promise.all(Array.from({ length: 3 }, () => limiter.hit([{ rule: r, values: [] }], 1)));
    expect(answers.map((a) => a[0]?.remaining)).toEqual([3, 2, 1]);
    expect(String(await redis.info('commandstats'))).toMatch(/cmdstat_time:calls=1,/);
  });
});

describe.skipIf(Boolean(process.env.REDIS_URL))('a batch during a Redis outage', () => {
  let own: RedisHandle;
  let control: RedisOutageControl;
  const logger = createLogger('ratelimit-service', { level: 'silent' });

  beforeAll(async () => {
    own = await startRedis();
    if (!own.control) throw new Error(`no outage controls for a Redis from ${own.source}`);
    control = own.control;
  });

  afterAll(async () => {
    control?.resume();
    await own?.stop();
  });

  const client = async (timeoutMs: number) => {
    const { redis: topology } = loadRateLimitConfig({ RATELIMIT_REDIS_URL: own.url });
    const connection = createRedisClient({ topology, commandTimeoutMs: timeoutMs, logger });
    await new Promise((resolve) => connection.once('ready', resolve));
    return connection;
  };

  it('fails every request of a batch to a frozen Redis with the same REDIS_TIMEOUT, counted once by the breaker', async () => {
    const connection = await client(200);
    try {
      const store = new RedisLimiter({ redis: connection, hashValues: hash, clock: () => now, maxBatch: 16 });
      const breaker = new CircuitBreaker({ failureThreshold: 2, openMs: 60_000 });
      const limiter = new ResilientLimiter({
        store,
        breaker,
        cache: new LocalCache({ maxEntries: 100 }),
        local: new LocalLimiter({
          hashValues: hash,
          cache: new LocalCache({ maxEntries: 100 }),
          replicas: () => 1,
          maxKeys: 100,
        }),
        hashValues: hash,
        mode: () => 'deny',
      });
      const r = rule('r', 100);
      await limiter.hit([{ rule: r, values: [] }], 1);
      control.pause();
      const storeFaults = await Promise.all(
        Array.from({ length: 10 }, (_, i) => store.hit([{ rule: r, values: [`u${i}`] }], 1).catch((e: unknown) => e)),
      );
      expect(storeFaults.every((e) => e instanceof RedisFault && e.code === 'REDIS_TIMEOUT')).toBe(true);
      expect(new Set(storeFaults).size).toBe(1);

      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) => limiter.hit([{ rule: r, values: [`v${i}`] }], 1).catch((e: unknown) => e)),
      );
      // Each request gets the failure mode's error (the breaker counts, the caller answers by the mode).
      for (const answer of answers) {
        expect(answer).toBeInstanceOf(StoreUnavailableError);
        expect((answer as StoreUnavailableError).reason).toBe('store_error');
        expect(((answer as StoreUnavailableError).cause as RedisFault).code).toBe('REDIS_TIMEOUT');
      }
      // One failed round trip for ten requests: the breaker (2 failures) is still closed.
      expect(breaker.state).toBe('closed');
      await limiter.hit([{ rule: r, values: ['w'] }], 1).catch(() => undefined);
      expect(breaker.state).toBe('open');
      // While open, every request gets the one frozen breaker-open error (no Error built per call).
      const [one, two] = await Promise.all(
        ['x', 'y'].map((user) => limiter.hit([{ rule: r, values: [user] }], 1).catch((e: unknown) => e)),
      );
      expect(one).toBeInstanceOf(StoreUnavailableError);
      expect((one as StoreUnavailableError).reason).toBe('breaker_open');
      expect(two).toBe(one);
      expect(Object.isFrozen(one)).toBe(true);
      control.resume();
    } finally {
      control.resume();
      connection.disconnect();
    }
  });

  it('fails every request of a batch to a stopped Redis at once with REDIS_UNAVAILABLE', async () => {
    const connection = await client(500);
    try {
      const store = new RedisLimiter({ redis: connection, hashValues: hash, clock: () => now });
      await control.down();
      const faults = await Promise.all(
        Array.from({ length: 5 }, (_, i) => store.hit([{ rule: rule('r', 5), values: [`u${i}`] }], 1).catch((e) => e)),
      );
      expect(faults.map((e) => (e as RedisFault).code)).toEqual(Array(5).fill('REDIS_UNAVAILABLE'));
    } finally {
      await control.up();
      connection.disconnect();
    }
  });
});

describe.skipIf(Boolean(process.env.REDIS_URL)).each(['allow', 'deny'] as const)(
  'the service with RATELIMIT_REDIS_FAILURE_MODE=%s, calls in flight together',
  (mode) => {
    let own: RedisHandle;
    let control: RedisOutageControl;
    let service: TestService;
    let users = 0;
    const call = () => service.call({ domain: rateLimitDomain, descriptors: [authenticated(`uid-${++users}`)] }, 1_000);
    const metric = async (name: string) =>
      Number(
        new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec((await service.admin('/metrics')).text)?.[1] ??
          Number.NaN,
      );

    beforeAll(async () => {
      own = await startRedis();
      if (!own.control) throw new Error(`no outage controls for a Redis from ${own.source}`);
      control = own.control;
      service = await startTestService({
        redisUrl: own.url,
        env: {
          RATELIMIT_REDIS_FAILURE_MODE: mode,
          RATELIMIT_REDIS_TIMEOUT: '250ms',
          RATELIMIT_BREAKER_FAILURES: '3',
          RATELIMIT_BREAKER_OPEN_FOR: '300ms',
        },
      });
      await eventually(() => service.app.status().redis === 'ready');
      service.app.applyPolicy(testPolicy, 'v1');
    });

    afterAll(async () => {
      control?.resume();
      await service?.close();
      await own?.stop();
    });

    it('passes every decision through exactly one batch (the batch-size histogram)', async () => {
      const sum = await metric('sekisho_ratelimit_redis_batch_size_sum');
      const count = await metric('sekisho_ratelimit_redis_batch_size_count');
      const answers = await Promise.all(Array.from({ length: 20 }, call));
      expect(answers.every((a) => a.overallCode === Code.OK)).toBe(true);
      expect((await metric('sekisho_ratelimit_redis_batch_size_sum')) - (sum || 0)).toBe(20);
      const calls = (await metric('sekisho_ratelimit_redis_batch_size_count')) - (count || 0);
      expect(calls).toBeGreaterThanOrEqual(1);
      expect(calls).toBeLessThanOrEqual(20);
    });

    it('answers every call of a batch by the mode within the deadline while Redis is frozen', async () => {
      control.pause();
      try {
        // Several rounds: the first batches time out, then the breaker opens and answers at once.
        for (let round = 0; round < 4; round++) {
          const answers = await Promise.all(Array.from({ length: 10 }, call));
          for (const answer of answers) {
            expect(answer.overallCode).toBe(mode === 'deny' ? Code.OVER_LIMIT : Code.OK);
            expect(headersOf(answer)).toEqual(mode === 'deny' ? { 'retry-after': '1' } : {});
          }
        }
      } finally {
        control.resume();
      }
      // Decided by Redis again once the breaker has closed: a fresh user's first request of 3.
      let remaining: number | undefined;
      for (let attempt = 0; attempt < 100 && remaining !== 2; attempt++) {
        remaining = (await call()).statuses[0]?.limitRemaining;
        if (remaining !== 2) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(remaining).toBe(2);
    });
  },
);
