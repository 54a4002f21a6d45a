import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { blockKey, counterKey, createValueHasher } from './keys';
import { RedisLimiter } from './redis-limiter';
import type { LimitDecision, LimitRule } from './types';

// Against a real redis-server: the Lua script, key layout, TTLs and time source are what is tested.

let server: RedisHandle;
let redis: Redis;
let now: number;
// 2026-01-01T00:00:00Z: a whole hour, so every window here starts at `start`.
const start = Date.UTC(2026, 0, 1);

const limiterWith = (hashValues = createValueHasher()) => new RedisLimiter({ redis, clock: () => now, hashValues });

const rule = (id: string, requestsPerWindow: number, windowSeconds: number, blockSeconds = 0): LimitRule => ({
  id,
  requestsPerWindow,
  windowSeconds,
  blockSeconds,
});

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { lazyConnect: true });
  await redis.connect();
});

afterAll(async () => {
  await redis?.quit();
  await server?.stop();
});

beforeEach(async () => {
  await redis.flushall();
  now = start;
});

describe('RedisLimiter over Redis: fixed windows', () => {
  it('allows up to the limit in a window and refuses the request after it', async () => {
    const limiter = limiterWith();
    const perMinute = rule('per-minute', 3, 60);
    const results = [];
    for (let i = 0; i < 4; i++) {
      now = start + i * 1000;
      const [decision] = await limiter.hit([{ rule: perMinute, values: ['uid-1'] }], 1);
      results.push(decision);
    }
    expect(results.map((d) => [d?.overLimit, d?.remaining, d?.resetSeconds])).toEqual([
      [false, 2, 60],
      [false, 1, 59],
      [false, 0, 58],
      [true, 0, 57],
    ]);
  });

  it('starts counting afresh at the window boundary given by the clock', async () => {
    const limiter = limiterWith();
    const perMinute = rule('per-minute', 1, 60);
    now = start + 59_500;
    expect((await limiter.hit([{ rule: perMinute, values: ['u'] }], 1))[0]).toMatchObject({ overLimit: false });
    expect((await limiter.hit([{ rule: perMinute, values: ['u'] }], 1))[0]).toMatchObject({
      overLimit: true,
      resetSeconds: 1,
    });
    now = start + 60_000;
    expect((await limiter.hit([{ rule: perMinute, values: ['u'] }], 1))[0]).toMatchObject({
      overLimit: false,
      remaining: 0,
      resetSeconds: 60,
    });
  });

  it('checks and counts every window of a descriptor in one call', async () => {
    const limiter = limiterWith();
    const minute = rule('minute', 2, 60);
    const hour = rule('hour', 3, 3600);
    const hit = () =>
      limiter.hit(
        [
          { rule: minute, values: ['u'] },
          { rule: hour, values: ['u'] },
        ],
        1,
      );
    await hit();
    await hit();
    // Third in the same minute: the minute refuses, and the refused request is not counted
    // against the hour (envoyproxy/ratelimit would count it).
    expect((await hit()).map((d) => [d.overLimit, d.remaining])).toEqual([
      [true, 0],
      [false, 1],
    ]);
    now = start + 60_000;
    expect((await hit()).map((d) => [d.overLimit, d.remaining])).toEqual([
      [false, 1],
      [false, 0],
    ]);
    // The hour refuses now, and the minute does not count it either.
    expect((await hit()).map((d) => [d.overLimit, d.remaining])).toEqual([
      [false, 1],
      [true, 0],
    ]);
  });

  it('keeps each user (value) on a counter of its own', async () => {
    const limiter = limiterWith();
    const perMinute = rule('per-minute', 1, 60);
    await limiter.hit([{ rule: perMinute, values: ['alice'] }], 1);
    const [alice] = await limiter.hit([{ rule: perMinute, values: ['alice'] }], 1);
    const [bob] = await limiter.hit([{ rule: perMinute, values: ['bob'] }], 1);
    expect(alice?.overLimit).toBe(true);
    expect(bob?.overLimit).toBe(false);
  });

  it('adds hits_addend, and counts 0 as 1 as Envoy does', async () => {
    const limiter = limiterWith();
    const perMinute = rule('per-minute', 10, 60);
    expect((await limiter.hit([{ rule: perMinute, values: ['u'] }], 4))[0]?.remaining).toBe(6);
    expect((await limiter.hit([{ rule: perMinute, values: ['u'] }], 0))[0]?.remaining).toBe(5);
    expect((await limiter.hit([{ rule: perMinute, values: ['u'] }], 6))[0]).toMatchObject({
      overLimit: true,
      remaining: 0,
    });
  });

  it('blocks a key for block_seconds once it exceeds the limit, across windows, without counting', async () => {
    const limiter = limiterWith();
    const login = rule('login', 2, 60, 900);
    const hit = async () => (await limiter.hit([{ rule: login, values: ['203.0.113.7'] }], 1))[0];
    await hit();
    await hit();
    const excess = await hit();
    expect(excess).toMatchObject({ overLimit: true, blocked: false, resetSeconds: 900 });

    const blockKeys = await redis.keys('sekisho:rl:{_}:block:*');
    expect(blockKeys).toHaveLength(1);
    const ttl = await redis.ttl(blockKeys[0] as string);
    expect(ttl).toBeGreaterThan(890);
    expect(ttl).toBeLessThanOrEqual(900);

    const counterKeys = await redis.keys('sekisho:rl:{_}:login:*');
    const countBefore = await redis.hgetall(counterKeys[0] as string);
    now = start + 120_000; // a new window: still blocked
    const blocked = await hit();
    expect(blocked).toMatchObject({ overLimit: true, blocked: true, remaining: 0 });
    expect(blocked?.resetSeconds).toBeGreaterThan(890);
    expect(await redis.keys('sekisho:rl:{_}:login:*')).toEqual(counterKeys);
    expect(await redis.hgetall(counterKeys[0] as string)).toEqual(countBefore);

    // Another address is not affected.
    expect((await limiter.hit([{ rule: login, values: ['203.0.113.8'] }], 1))[0]?.overLimit).toBe(false);
  });

  it('writes hashed values, never user ids or IPs, and counters that expire with their window', async () => {
    const limiter = limiterWith();
    now = start + 10_000;
    await limiter.hit(
      [
        { rule: rule('route:create-appointment/user/60s', 5, 60), values: ['firebase-uid-123'] },
        { rule: rule('auth/ip/3600s', 5, 3600), values: ['198.51.100.23'] },
      ],
      1,
    );
    const keys = (await redis.keys('*')).sort();
    expect(keys).toEqual([
      `sekisho:rl:{_}:auth/ip/3600s:fixed:3600s:5:${createValueHasher()(['198.51.100.23'])}`,
      `sekisho:rl:{_}:route:create-appointment/user/60s:fixed:60s:5:${createValueHasher()(['firebase-uid-123'])}`,
    ]);
    for (const key of keys) {
      expect(key).not.toContain('firebase-uid-123');
      expect(key).not.toContain('198.51.100.23');
      expect(await redis.hgetall(key)).toEqual({ w: String(start), c: '1' });
    }
    // Each counter lives until its window ends, 10 s into both windows here.
    const [hour, minute] = await Promise.all(keys.map((key) => redis.pttl(key)));
    expect(hour).toBeGreaterThan(3_589_000);
    expect(hour).toBeLessThanOrEqual(3_590_000);
    expect(minute).toBeGreaterThan(49_000);
    expect(minute).toBeLessThanOrEqual(50_000);
  });

  it('sets the expiry only when a window starts, and restarts the count in the next one', async () => {
    const limiter = limiterWith();
    const perMinute = rule('per-minute', 100, 60);
    const key = counterKey(perMinute, createValueHasher()(['u']));
    await limiter.hit([{ rule: perMinute, values: ['u'] }], 1);
    await redis.pexpire(key, 30_000); // stands in for time passing
    now = start + 1_000;
    await limiter.hit([{ rule: perMinute, values: ['u'] }], 1);
    expect(await redis.pttl(key)).toBeLessThanOrEqual(30_000);
    expect(await redis.hget(key, 'c')).toBe('2');

    now = start + 60_000; // the key has not expired yet (real time stood still): the window field decides
    const [decision] = await limiter.hit([{ rule: perMinute, values: ['u'] }], 1);
    expect(decision?.remaining).toBe(99);
    expect(await redis.hgetall(key)).toEqual({ w: String(start + 60_000), c: '1' });
    expect(await redis.pttl(key)).toBeGreaterThan(59_000);
  });

  it("counts in Redis's clock when no clock is given, even on a replica whose clock is off", async () => {
    const limiter = new RedisLimiter({ redis, hashValues: createValueHasher() });
    const hour = rule('hour', 10, 3600);
    const redisNow = async () => {
      const [s, us] = await redis.time();
      return Number(s) * 1000 + Math.floor(Number(us) / 1000);
    };
    const before = await redisNow();
    // This process's clock is five hours and a half off: it must not matter.
    const skewed = vi.spyOn(Date, 'now').mockReturnValue(before - 5.5 * 3_600_000);
    let decision: LimitDecision | undefined;
    try {
      [decision] = await limiter.hit([{ rule: hour, values: ['u'] }], 1);
    } finally {
      skewed.mockRestore();
    }
    const after = await redisNow();
    const windowStart = Number(await redis.hget(counterKey(hour, createValueHasher()(['u'])), 'w'));
    expect([before - (before % 3_600_000), after - (after % 3_600_000)]).toContain(windowStart);
    const resetRange = [
      Math.ceil((windowStart + 3_600_000 - after) / 1000),
      Math.ceil((windowStart + 3_600_000 - before) / 1000),
    ];
    expect(decision?.resetSeconds).toBeGreaterThanOrEqual(Math.max(1, resetRange[0] as number));
    expect(decision?.resetSeconds).toBeLessThanOrEqual(resetRange[1] as number);
  });

  it('treats a block key without expiry as a block of one second', async () => {
    const limiter = limiterWith();
    const r = rule('r', 5, 60, 900);
    await redis.set(blockKey(r, createValueHasher()(['u'])), '1');
    const [decision] = await limiter.hit([{ rule: r, values: ['u'] }], 1);
    expect(decision).toMatchObject({ overLimit: true, blocked: true, resetSeconds: 1 });
  });

  it('hashes with an HMAC when given a secret, so keys differ from the plain hash', async () => {
    const keyed = createValueHasher('a-secret-of-sixteen+');
    expect(keyed(['198.51.100.23'])).not.toBe(createValueHasher()(['198.51.100.23']));
    const r = rule('r', 5, 60);
    await limiterWith(keyed).hit([{ rule: r, values: ['198.51.100.23'] }], 1);
    expect(await redis.keys('*')).toEqual([counterKey(r, keyed(['198.51.100.23']))]);
  });

  it('costs one script call for all counters of a call', async () => {
    const limiter = limiterWith();
    const checks = [1, 2, 3].map((n) => ({ rule: rule(`r${n}`, 5, 60 * n), values: ['u'] }));
    await limiter.hit(checks, 1); // the first use on a connection loads the script with EVAL
    const calls = async () => {
      const stats = await redis.info('commandstats');
      const count = (command: string) => Number(stats.match(new RegExp(`cmdstat_${command}:calls=(\\d+)`))?.[1] ?? 0);
      return { scripts: count('eval') + count('evalsha'), increments: count('hincrby') };
    };
    const before = await calls();
    await limiter.hit(checks, 1);
    const after = await calls();
    expect(after.scripts - before.scripts).toBe(1);
    expect(after.increments - before.increments).toBe(3);
  });
});

describe('the counter key tag on a standalone Redis', () => {
  it('keeps one script per call and atomic non-counting (the split by slot is for clusters only)', async () => {
    const limiter = new RedisLimiter({ redis, clock: () => now, hashValues: createValueHasher(), keyTag: 'counter' });
    const route = rule('route', 1, 60);
    const perUser = rule('route/user', 5, 60);
    const checks = [
      { rule: route, values: [] },
      { rule: perUser, values: ['u'] },
    ];
    expect((await limiter.hit(checks, 1)).map((d) => d.overLimit)).toEqual([false, false]);
    await redis.config('RESETSTAT');
    expect((await limiter.hit(checks, 1)).map((d) => d.overLimit)).toEqual([true, false]);
    const stats = String(await redis.info('commandstats'));
    expect(stats).toMatch(/cmdstat_evalsha:calls=1,/);
    const userKey = counterKey(perUser, createValueHasher()(['u']), 'counter');
    expect(userKey).toMatch(/^sekisho:rl:\{route\/user:[0-9a-f]{32}\}:fixed:60s:5$/);
    expect(await redis.hget(userKey, 'c')).toBe('1');
  });
});
