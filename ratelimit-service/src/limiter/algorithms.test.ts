import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { counterKey, createValueHasher } from './keys';
import { RedisLimiter } from './redis-limiter';
import type { LimitAlgorithm, LimitCheck, LimitRule } from './types';

// The three algorithms against a real redis-server, time moved by the test's clock (the
// script's ARGV override of Redis's TIME), except where two replicas share Redis's clock.

let server: RedisHandle;
let redis: Redis;
let now: number;
// 2026-01-01T00:00:00Z: a whole hour, so every fixed window here starts at `start`.
const start = Date.UTC(2026, 0, 1);
const hash = createValueHasher();

const limiter = () => new RedisLimiter({ redis, clock: () => now, hashValues: hash });

const rule = (id: string, algorithm: LimitAlgorithm, limit: number, window: number, extra: Partial<LimitRule> = {}) =>
  ({ id, algorithm, requestsPerWindow: limit, windowSeconds: window, blockSeconds: 0, ...extra }) as LimitRule;

/** `times` requests at the current clock; how many were allowed. */
async function allowed(l: RedisLimiter, checks: LimitCheck[], times: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < times; i++) if (!(await l.hit(checks, 1)).some((d) => d.overLimit)) ok++;
  return ok;
}

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

describe('across a window boundary (5 per minute, 5 requests just before a whole minute, 5 just after)', () => {
  const burstAcross = async (algorithm: LimitAlgorithm) => {
    const l = limiter();
    const checks = [{ rule: rule('r', algorithm, 5, 60), values: ['u'] }];
    now = start + 59_900;
    const before = await allowed(l, checks, 5);
    now = start + 60_100;
    const after = await allowed(l, checks, 5);
    return before + after;
  };

  it('a fixed window lets twice the limit through within 200 ms', async () => {
    expect(await burstAcross('fixed')).toBe(10);
  });

  it('a sliding window does not', async () => {
    expect(await burstAcross('sliding')).toBe(5);
  });

  it('a token bucket (burst = limit) does not', async () => {
    expect(await burstAcross('tokenBucket')).toBe(5);
  });
});

describe('sliding window', () => {
  it('lets a request in again exactly when the oldest accepted one leaves the window, and says when', async () => {
    const l = limiter();
    const checks = [{ rule: rule('s', 'sliding', 3, 60), values: ['u'] }];
    for (const at of [0, 10_000, 20_000]) {
      now = start + at;
      expect((await l.hit(checks, 1))[0]).toMatchObject({ overLimit: false });
    }
    now = start + 30_000;
    // The one at 0 s leaves at 60 s: 30 s from now.
    expect((await l.hit(checks, 1))[0]).toMatchObject({ overLimit: true, remaining: 0, resetSeconds: 30 });
    now = start + 59_999;
    expect((await l.hit(checks, 1))[0]?.overLimit).toBe(true);
    now = start + 60_000;
    expect((await l.hit(checks, 1))[0]).toMatchObject({ overLimit: false, remaining: 0, resetSeconds: 10 });
    // Refused requests are not logged: the set never holds more than the limit.
    expect(await redis.zcard(counterKey(checks[0]?.rule as LimitRule, hash(['u'])))).toBe(3);
  });

  it('never holds more than the limit in any window, whatever the pattern', async () => {
    const l = limiter();
    const checks = [{ rule: rule('s', 'sliding', 10, 10), values: ['u'] }];
    const accepted: number[] = [];
    // A request every 250 ms for 40 s, in bursts of three.
    for (let t = 0; t < 40_000; t += 250) {
      now = start + t;
      for (let k = 0; k < 3; k++) if (!(await l.hit(checks, 1))[0]?.overLimit) accepted.push(t);
    }
    for (const from of accepted) {
      expect(accepted.filter((t) => t >= from && t < from + 10_000).length).toBeLessThanOrEqual(10);
    }
    expect(accepted.length).toBeGreaterThanOrEqual(40);
  });

  it('counts hits_addend as that many requests', async () => {
    const l = limiter();
    const checks = [{ rule: rule('s', 'sliding', 5, 60), values: ['u'] }];
    expect((await l.hit(checks, 3))[0]).toMatchObject({ overLimit: false, remaining: 2 });
    expect((await l.hit(checks, 3))[0]).toMatchObject({ overLimit: true, remaining: 0 });
    expect((await l.hit(checks, 2))[0]).toMatchObject({ overLimit: false, remaining: 0 });
  });
});

describe('token bucket (GCRA)', () => {
  it('lets the burst through at once, then one request per interval (100 per second, burst 200)', async () => {
    const l = limiter();
    const checks = [{ rule: rule('cdn', 'tokenBucket', 100, 1, { burst: 200 }), values: ['198.51.100.7'] }];
    expect(await allowed(l, checks, 201)).toBe(200);
    const [refused] = await l.hit(checks, 1);
    expect(refused).toMatchObject({ overLimit: true, remaining: 0, resetSeconds: 1 });
    now = start + 10; // one interval (10 ms) later: one more
    expect(await allowed(l, checks, 2)).toBe(1);
    now = start + 1_010; // a second later: 100 more, not a new burst
    expect(await allowed(l, checks, 150)).toBe(100);
    now = start + 10_000; // idle long enough: the bucket is full again
    expect(await allowed(l, checks, 250)).toBe(200);
  });

  it('keeps one key holding the theoretical arrival time, expiring when the bucket is full again', async () => {
    const l = limiter();
    const r = rule('b', 'tokenBucket', 10, 60, { burst: 3 });
    await l.hit([{ rule: r, values: ['u'] }], 1);
    const key = counterKey(r, hash(['u']));
    expect(key).toContain(':bucket:60s:10:b3:');
    expect(Number(await redis.get(key))).toBe(start + 6_000);
    expect(await redis.pttl(key)).toBeGreaterThan(5_000);
    expect(await redis.pttl(key)).toBeLessThanOrEqual(6_000);
  });

  it('reports the tokens left and when the bucket is full', async () => {
    const l = limiter();
    const checks = [{ rule: rule('b', 'tokenBucket', 10, 60, { burst: 3 }), values: ['u'] }];
    expect((await l.hit(checks, 1))[0]).toMatchObject({ overLimit: false, remaining: 2, resetSeconds: 6 });
    expect((await l.hit(checks, 2))[0]).toMatchObject({ overLimit: false, remaining: 0, resetSeconds: 18 });
    // The next token comes one interval (6 s) after now.
    expect((await l.hit(checks, 1))[0]).toMatchObject({ overLimit: true, remaining: 0, resetSeconds: 6 });
  });
});

describe.each<LimitAlgorithm>(['fixed', 'sliding', 'tokenBucket'])('%s with blockFor', (algorithm) => {
  it('blocks the key once it exceeds the limit, past the window, without counting', async () => {
    const l = limiter();
    const login = rule('login', algorithm, 2, 60, { blockSeconds: 900 });
    const hit = async () => (await l.hit([{ rule: login, values: ['203.0.113.7'] }], 1))[0];
    expect((await hit())?.overLimit).toBe(false);
    expect((await hit())?.overLimit).toBe(false);
    expect(await hit()).toMatchObject({ overLimit: true, blocked: false, resetSeconds: 900 });
    const key = counterKey(login, hash(['203.0.113.7']));
    const dump = async () => [await redis.type(key), await redis.dump(key)];
    const before = await dump();
    now = start + 300_000; // every algorithm would have let it in again by now
    expect(await hit()).toMatchObject({ overLimit: true, blocked: true, remaining: 0, resetSeconds: 900 });
    expect(await dump()).toEqual(before);
    expect((await l.hit([{ rule: login, values: ['203.0.113.8'] }], 1))[0]?.overLimit).toBe(false);
  });
});

describe('several rules in one call', () => {
  const user = {
    fixed: rule('user/60s', 'fixed', 300, 60),
    sliding: rule('user/3600s', 'sliding', 1000, 3600),
    tokenBucket: rule('user/1s', 'tokenBucket', 10, 1, { burst: 20 }),
  };
  const route = rule('route:auth/60s', 'sliding', 1, 60);
  const stateOf = async (r: LimitRule) => {
    const key = counterKey(r, hash(['uid-1']));
    const type = await redis.type(key);
    if (type === 'hash') return redis.hgetall(key);
    if (type === 'zset') return redis.zrange(key, 0, -1, 'WITHSCORES');
    return redis.get(key);
  };

  it.each(Object.entries(user))(
    'a request refused by the per-route limit is not counted against the per-user %s limit',
    async (_, userRule) => {
      const l = limiter();
      const checks = [
        { rule: userRule, values: ['uid-1'] },
        { rule: route, values: ['uid-1'] },
      ];
      expect((await l.hit(checks, 1)).map((d) => d.overLimit)).toEqual([false, false]);
      const counted = await stateOf(userRule);
      now = start + 5;
      const refused = await l.hit(checks, 1);
      expect(refused.map((d) => d.overLimit)).toEqual([false, true]);
      expect(await stateOf(userRule)).toEqual(counted);
    },
  );

  it('keeps the reference per-user pair (300 per minute, 1,000 per hour): the hour refuses, the minute does not count it', async () => {
    const l = limiter();
    const minute = rule('user/60s', 'fixed', 300, 60);
    const hour = rule('user/3600s', 'fixed', 1000, 3600);
    const checks = [
      { rule: minute, values: ['u'] },
      { rule: hour, values: ['u'] },
    ];
    let ok = 0;
    for (let m = 0; m < 4; m++) {
      now = start + m * 60_000;
      ok += await allowed(l, checks, 300);
    }
    expect(ok).toBe(1000);
    expect(await redis.hget(counterKey(minute, hash(['u'])), 'c')).toBe('100');
  });

  it('lets a shadow (advisory) rule refuse without refusing, and the others still count', async () => {
    const l = limiter();
    const shadow = rule('shadow', 'sliding', 1, 60, { advisory: true });
    const enforced = rule('enforced', 'fixed', 10, 60);
    const checks = [
      { rule: shadow, values: ['u'] },
      { rule: enforced, values: ['u'] },
    ];
    await l.hit(checks, 1);
    const second = await l.hit(checks, 1);
    expect(second.map((d) => [d.overLimit, d.remaining])).toEqual([
      [true, 0],
      [false, 8],
    ]);
    // The shadow rule counts as if enforced: what it refused is not in its log.
    expect(await redis.zcard(counterKey(shadow, hash(['u'])))).toBe(1);
  });

  it('counts two checks of one counter in one call twice, for every algorithm', async () => {
    const l = limiter();
    for (const algorithm of ['fixed', 'sliding', 'tokenBucket'] as const) {
      const r = rule(`dup-${algorithm}`, algorithm, 3, 60);
      const check = { rule: r, values: ['u'] };
      expect((await l.hit([check, check], 1)).map((d) => d.overLimit)).toEqual([false, false]);
      expect((await l.hit([check, check], 1)).map((d) => d.overLimit)).toEqual([false, true]);
      expect((await l.hit([check], 1))[0]?.overLimit).toBe(false);
      expect((await l.hit([check], 1))[0]?.overLimit).toBe(true);
    }
  });

  it('counts a changed limit on a key of its own, never on the old counter', async () => {
    const l = limiter();
    const old = rule('r', 'fixed', 1, 60);
    await l.hit([{ rule: old, values: ['u'] }], 1);
    expect((await l.hit([{ rule: old, values: ['u'] }], 1))[0]?.overLimit).toBe(true);
    for (const changed of [
      rule('r', 'fixed', 2, 60),
      rule('r', 'sliding', 1, 60),
      rule('r', 'tokenBucket', 1, 60),
      rule('r', 'fixed', 1, 30),
    ]) {
      expect((await l.hit([{ rule: changed, values: ['u'] }], 1))[0]?.overLimit).toBe(false);
    }
    expect(await redis.keys('sekisho:rl:{_}:r:*')).toHaveLength(5);
  });
});

describe("two replicas sharing one Redis, on Redis's clock", () => {
  it.each<LimitAlgorithm>(['fixed', 'sliding', 'tokenBucket'])('%s: they agree on one count', async (algorithm) => {
    const other = new Redis(server.url, { lazyConnect: true });
    await other.connect();
    try {
      // No clock: both use TIME inside the script. A window of an hour keeps a boundary away.
      const replicas = [redis, other].map((r) => new RedisLimiter({ redis: r, hashValues: hash }));
      const checks = [{ rule: rule('shared', algorithm, 6, 3600), values: ['u'] }];
      const answers = [];
      for (let i = 0; i < 10; i++) answers.push((await (replicas[i % 2] as RedisLimiter).hit(checks, 1))[0]?.overLimit);
      expect(answers).toEqual([false, false, false, false, false, false, true, true, true, true]);
      const [fromA, fromB] = await Promise.all(replicas.map((r) => r.hit(checks, 1)));
      expect([fromA?.[0]?.overLimit, fromB?.[0]?.overLimit]).toEqual([true, true]);
    } finally {
      await other.quit();
    }
  });
});
