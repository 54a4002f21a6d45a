import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { counterKey, createValueHasher } from './keys';
import { LeasedLimiter, type LeaseSettings, leaseSize } from './leased-limiter';
import { RedisLimiter } from './redis-limiter';
import type { LimitCheck, LimitDecision, Limiter, LimitRule } from './types';

// Leased quota against a real redis-server: the leases are counted by the same Lua script as
// every other decision, so what is tested is what Redis holds and what clients are answered.

let server: RedisHandle;
let redis: Redis;
let now: number;
// 2026-01-01T00:00:00Z: every window here starts at `start`.
const start = Date.UTC(2026, 0, 1);
const hashValues = createValueHasher();

const rule = (id: string, requestsPerWindow: number, extra: Partial<LimitRule> = {}): LimitRule => ({
  id,
  requestsPerWindow,
  windowSeconds: 60,
  blockSeconds: 0,
  ...extra,
});

/** The Redis store, counting its calls and the hits they add. */
function countingStore(): Limiter & { calls: number; added: number } {
  const store = new RedisLimiter({ redis, clock: () => now, hashValues });
  const counting = {
    calls: 0,
    added: 0,
    hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
      counting.calls++;
      for (const check of checks) counting.added += check.addend ?? hitsAddend;
      return store.hit(checks, hitsAddend);
    },
  };
  return counting;
}

const leased = (store: Limiter, settings: Partial<LeaseSettings> = {}, maxKeys = 1000) =>
  new LeasedLimiter({ store, fraction: 0.01, max: 100, maxKeys, clock: () => now, ...settings });

/** What Redis counted for a rule and value in the current window. */
async function counted(r: LimitRule, value: string): Promise<number> {
  return Number((await redis.hget(counterKey(r, hashValues([value])), 'c')) ?? 0);
}

/** One request, answered after any lease it asked for has been granted (a steady client). */
async function request(limiter: LeasedLimiter, checks: LimitCheck[]): Promise<LimitDecision[]> {
  const decisions = await limiter.hit(checks, 1);
  await vi.waitFor(() => expect(limiter.asking).toBe(0));
  return decisions;
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

describe('leaseSize', () => {
  const settings: LeaseSettings = { fraction: 0.01, max: 100 };
  it.each([
    ['a fixed window: a share of the limit', rule('r', 1000), settings, 10],
    ['capped at max', rule('r', 1_000_000), settings, 100],
    ['under 2: per request', rule('r', 199), settings, 0],
    ['fraction 0: never', rule('r', 1_000_000), { fraction: 0, max: 100 }, 0],
    ['sliding windows are exact: never', rule('r', 10_000, { algorithm: 'sliding' }), settings, 0],
    ['token buckets: never', rule('r', 10_000, { algorithm: 'tokenBucket' }), settings, 0],
    ['block_seconds (a lease must not start a block): never', rule('r', 10_000, { blockSeconds: 60 }), settings, 0],
    ['shadow rules: never', rule('r', 10_000, { advisory: true }), settings, 0],
  ])('%s', (_name, r, s, expected) => {
    expect(leaseSize(r, s)).toBe(expected);
  });
});

describe('LeasedLimiter over Redis', () => {
  it('answers a steady client from leases: one script call per half lease, every lease counted in Redis', async () => {
    const store = countingStore();
    const limiter = leased(store);
    const perMinute = rule('per-minute', 1000); // leases of 10
    const sources: Array<string | undefined> = [];
    for (let i = 0; i < 100; i++) {
      const [d] = await request(limiter, [{ rule: perMinute, values: ['uid-1'] }]);
      expect(d?.overLimit).toBe(false);
      sources.push(d?.source);
    }
    // The first request waits for Redis (no lease yet), every later one is a lease's.
    expect(sources[0]).toBeUndefined();
    expect(sources.slice(1).every((s) => s === 'lease')).toBe(true);
    // A lease every 5 requests (the next is asked for at half), not one call per request.
    expect(store.calls).toBeLessThanOrEqual(100 / 5 + 2);
    // Redis counted every request answered, and at most a lease and a half more.
    const inRedis = await counted(perMinute, 'uid-1');
    expect(inRedis).toBe(store.added);
    expect(inRedis).toBeGreaterThanOrEqual(100);
    expect(inRedis).toBeLessThanOrEqual(100 + 15);
  });

  it('lets exactly the limit through on one replica: the window rest is decided per request', async () => {
    const store = countingStore();
    const limiter = leased(store, { fraction: 0.1 });
    const small = rule('small', 25); // leases of 2
    const allowed = [];
    for (let i = 0; i < 40; i++) {
      const [d] = await request(limiter, [{ rule: small, values: ['uid-1'] }]);
      if (!d?.overLimit) allowed.push(i);
    }
    expect(allowed).toHaveLength(25);
    expect(allowed.at(-1)).toBe(24);
    expect(await counted(small, 'uid-1')).toBe(25);
  });

  it('never lets more than the limit through two replicas, and refuses at most their two leases early', async () => {
    const a = leased(countingStore(), { fraction: 0.05 });
    const b = leased(countingStore(), { fraction: 0.05 });
    const r = rule('shared', 200); // leases of 10 each
    let allowed = 0;
    const answers: boolean[] = [];
    for (let i = 0; i < 300; i++) {
      const [d] = await request(i % 2 === 0 ? a : b, [{ rule: r, values: ['uid-1'] }]);
      answers.push(!d?.overLimit);
      if (!d?.overLimit) allowed++;
    }
    expect(allowed).toBeLessThanOrEqual(200);
    expect(allowed).toBeGreaterThanOrEqual(200 - 2 * 10);
    expect(await counted(r, 'uid-1')).toBeLessThanOrEqual(200);
    // After the first refusal only the other replica's lease rest gets through.
    expect(answers.slice(answers.indexOf(false)).filter((ok) => ok).length).toBeLessThanOrEqual(10);
  });

  it('ends a lease with its window: the next window is leased afresh and the old rest is not spent', async () => {
    const store = countingStore();
    const limiter = leased(store);
    const perMinute = rule('per-minute', 1000);
    now = start + 58_000;
    for (let i = 0; i < 3; i++) await request(limiter, [{ rule: perMinute, values: ['u'] }]);
    expect(await counted(perMinute, 'u')).toBe(1 + 10);
    now = start + 60_000;
    const [first] = await request(limiter, [{ rule: perMinute, values: ['u'] }]);
    // Not from the old window's lease: Redis decided it (and a new lease was asked for).
    expect(first?.source).toBeUndefined();
    expect(first?.resetSeconds).toBe(60);
    expect(await counted(perMinute, 'u')).toBe(1 + 10);
    const [second] = await request(limiter, [{ rule: perMinute, values: ['u'] }]);
    expect(second).toMatchObject({ source: 'lease', overLimit: false, resetSeconds: 60 });
  });

  it("gives a refused request's token back: another rule's refusal spends nothing of a lease", async () => {
    const store = countingStore();
    const limiter = leased(store);
    const generous = rule('generous', 1000); // leased
    const strict = rule('strict', 1); // per request
    const both = (): LimitCheck[] => [
      { rule: generous, values: ['u'] },
      { rule: strict, values: ['u'] },
    ];
    await request(limiter, [{ rule: generous, values: ['u'] }]); // asks for the first lease
    const [leasedFirst, strictFirst] = await request(limiter, both());
    expect(leasedFirst?.source).toBe('lease');
    expect(strictFirst?.overLimit).toBe(false);
    for (let i = 0; i < 20; i++) {
      const [g, s] = await request(limiter, both());
      expect(s?.overLimit).toBe(true);
      expect(g?.overLimit).toBe(false);
    }
    // 9 tokens left of the lease: no second lease was asked for by the 20 refused requests.
    expect(await counted(generous, 'u')).toBe(1 + 10);
    expect(await counted(strict, 'u')).toBe(1);
  });

  it('reports what is left to everyone: Redis rest plus the lease rest', async () => {
    const limiter = leased(countingStore());
    const perMinute = rule('per-minute', 1000);
    // The first request and its lease go to Redis in one batch, the lease first.
    const [d1] = await request(limiter, [{ rule: perMinute, values: ['u'] }]);
    expect(d1?.source).toBeUndefined();
    expect(d1?.remaining).toBe(1000 - 10 - 1);
    const [d2] = await request(limiter, [{ rule: perMinute, values: ['u'] }]);
    // Redis: 989 left; the lease: 9 more.
    expect(d2).toMatchObject({ source: 'lease', remaining: 998 });
  });

  it('sends checks it cannot lease to Redis unchanged (own addends, calls adding several hits)', async () => {
    const store = countingStore();
    const limiter = leased(store);
    const perMinute = rule('per-minute', 1000);
    await request(limiter, [{ rule: perMinute, values: ['u'], addend: 0 }]);
    await request(limiter, [
      { rule: perMinute, values: ['u'] },
      { rule: perMinute, values: ['v'], addend: 3 },
    ]);
    await limiter.hit([{ rule: perMinute, values: ['w'] }], 5);
    expect(await counted(perMinute, 'w')).toBe(5);
    expect(await counted(perMinute, 'v')).toBe(3);
  });

  it('a failing store: the error reaches the caller, tokens go back, and a failed lease is asked for again', async () => {
    const redisStore = countingStore();
    let failing = false;
    const store: Limiter = {
      hit: (checks, addend) => (failing ? Promise.reject(new Error('redis down')) : redisStore.hit(checks, addend)),
    };
    const grants: boolean[] = [];
    const limiter = new LeasedLimiter({
      store,
      fraction: 0.01,
      max: 100,
      maxKeys: 10,
      clock: () => now,
      hooks: { lease: (granted) => grants.push(granted) },
    });
    const generous = rule('generous', 1000);
    const strict = rule('strict', 1000, { algorithm: 'sliding' }); // never leased
    await request(limiter, [{ rule: generous, values: ['u'] }]);
    expect(grants).toEqual([true]);
    failing = true;
    // A lease token and a Redis check: Redis fails, the token goes back.
    await expect(
      limiter.hit(
        [
          { rule: generous, values: ['u'] },
          { rule: strict, values: ['u'] },
        ],
        1,
      ),
    ).rejects.toThrow('redis down');
    // The lease's ten tokens still there: spent through the outage (counted in Redis before it).
    for (let i = 0; i < 10; i++) {
      const [d] = await limiter.hit([{ rule: generous, values: ['u'] }], 1);
      expect(d?.source).toBe('lease');
    }
    await vi.waitFor(() => expect(limiter.asking).toBe(0));
    expect(grants.filter((g) => !g).length).toBeGreaterThan(0);
    await expect(limiter.hit([{ rule: generous, values: ['u'] }], 1)).rejects.toThrow('redis down');
    failing = false;
    await vi.waitFor(() => expect(limiter.asking).toBe(0));
    await request(limiter, [{ rule: generous, values: ['u'] }]);
    const [after] = await request(limiter, [{ rule: generous, values: ['u'] }]);
    expect(after?.source).toBe('lease');
  });

  it('holds at most maxKeys leases, dropping the least recently leased', async () => {
    const limiter = leased(countingStore(), {}, 3);
    const perMinute = rule('per-minute', 1000); // leases of 10
    const hit = async (user: string) => (await request(limiter, [{ rule: perMinute, values: [user] }]))[0]?.source;
    for (const user of ['a', 'b', 'c']) await hit(user);
    // a spends past half of its lease and takes another: now the most recently leased.
    for (let i = 0; i < 6; i++) expect(await hit('a')).toBe('lease');
    await hit('d');
    expect(limiter.size).toBe(3);
    expect(await hit('a')).toBe('lease');
    expect(await hit('c')).toBe('lease');
    // b was dropped for d: decided in Redis again while its new lease is asked for.
    expect(await hit('b')).toBeUndefined();
  });

  it('starts new leases when a policy changes the rule (same id, another limit)', async () => {
    const store = countingStore();
    const limiter = leased(store);
    const before = rule('per-minute', 1000);
    await request(limiter, [{ rule: before, values: ['u'] }]);
    expect((await request(limiter, [{ rule: before, values: ['u'] }]))[0]?.source).toBe('lease');
    // Lowered to 300: the old lease is not spent against the new limit.
    const after = rule('per-minute', 300);
    const [d] = await request(limiter, [{ rule: after, values: ['u'] }]);
    expect(d?.source).toBeUndefined();
  });
});
