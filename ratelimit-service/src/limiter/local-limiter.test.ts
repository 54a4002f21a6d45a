import { describe, expect, it } from 'vitest';
import { blockKey, counterKey, createValueHasher } from './keys';
import { LocalCache } from './local-cache';
import { LocalLimiter, localShare } from './local-limiter';
import type { LimitRule } from './types';

// The local failure mode's limiter, in memory: driven by a test clock, no Redis involved.

const hash = createValueHasher();
const start = Date.UTC(2026, 0, 1);

const setup = (replicas = 1, maxKeys = 1000) => {
  let now = start;
  const clock = () => now;
  const cache = new LocalCache({ maxEntries: 1000, clock });
  const limiter = new LocalLimiter({ hashValues: hash, cache, replicas: () => replicas, maxKeys, clock });
  return { limiter, cache, at: (ms: number) => (now = start + ms) };
};

const rule = (id: string, limit: number, window: number, extra: Partial<LimitRule> = {}): LimitRule => ({
  id,
  requestsPerWindow: limit,
  windowSeconds: window,
  blockSeconds: 0,
  ...extra,
});
const over = (decisions: ReadonlyArray<{ overLimit: boolean }>) => decisions.map((d) => d.overLimit);

describe('LocalLimiter', () => {
  it('divides every limit by the expected replica count, never below 1', () => {
    expect(localShare(300, 3)).toBe(100);
    expect(localShare(5, 3)).toBe(1);
    expect(localShare(1, 10)).toBe(1);
    const { limiter } = setup(3);
    const check = { rule: rule('r', 6, 60), values: ['u'] };
    const answers = Array.from({ length: 4 }, () => limiter.decide([check], 1)[0]?.overLimit);
    expect(answers).toEqual([false, false, true, true]);
  });

  it('lets a fixed window start afresh at the boundary', () => {
    const { limiter, at } = setup();
    const check = { rule: rule('r', 1, 60), values: ['u'] };
    at(59_000);
    expect(limiter.decide([check], 1)[0]).toMatchObject({ overLimit: false, remaining: 0, resetSeconds: 1 });
    expect(limiter.decide([check], 1)[0]).toMatchObject({ overLimit: true, source: 'local' });
    at(60_000);
    expect(limiter.decide([check], 1)[0]).toMatchObject({ overLimit: false, resetSeconds: 60 });
  });

  it('keeps a sliding window exact across the boundary', () => {
    const { limiter, at } = setup();
    const check = { rule: rule('r', 2, 60, { algorithm: 'sliding' }), values: ['u'] };
    at(50_000);
    expect(over(limiter.decide([check], 2))).toEqual([false]);
    at(61_000);
    expect(limiter.decide([check], 1)[0]).toMatchObject({ overLimit: true, resetSeconds: 49 });
    at(110_001);
    expect(over(limiter.decide([check], 1))).toEqual([false]);
  });

  it('lets a token bucket burst, then refill at its rate', () => {
    const { limiter, at } = setup();
    const check = { rule: rule('r', 1, 1, { algorithm: 'tokenBucket', burst: 3 }), values: ['u'] };
    expect(over(limiter.decide([check], 3))).toEqual([false]);
    expect(over(limiter.decide([check], 1))).toEqual([true]);
    at(1000);
    expect(over(limiter.decide([check], 1))).toEqual([false]);
    expect(over(limiter.decide([check], 1))).toEqual([true]);
  });

  it('does not count a request another rule refused', () => {
    const { limiter } = setup();
    const route = { rule: rule('route', 1, 60), values: [] };
    const user = { rule: rule('user', 5, 60), values: ['u'] };
    expect(limiter.decide([route, user], 1).map((d) => d.remaining)).toEqual([0, 4]);
    expect(over(limiter.decide([route, user], 1))).toEqual([true, false]);
    // The refused request left the user's count alone.
    expect(limiter.decide([{ ...user }], 1)[0]?.remaining).toBe(3);
  });

  it('lets a shadow (advisory) refusal count the others', () => {
    const { limiter } = setup();
    const shadow = { rule: rule('shadow', 1, 60, { advisory: true }), values: [] };
    const user = { rule: rule('user', 5, 60), values: ['u'] };
    limiter.decide([shadow, user], 1);
    expect(over(limiter.decide([shadow, user], 1))).toEqual([true, false]);
    expect(limiter.decide([user], 1)[0]?.remaining).toBe(2);
  });

  it('enforces a block known from Redis, and keeps the blocks it starts in the cache', () => {
    const { limiter, cache, at } = setup();
    const login = rule('login', 1, 60, { blockSeconds: 900 });
    cache.remember(blockKey(login, hash(['198.51.100.7'])), 600_000);
    expect(limiter.decide([{ rule: login, values: ['198.51.100.7'] }], 1)[0]).toMatchObject({
      overLimit: true,
      blocked: true,
      resetSeconds: 600,
    });
    const other = { rule: login, values: ['198.51.100.8'] };
    expect(over(limiter.decide([other], 1))).toEqual([false]);
    expect(limiter.decide([other], 1)[0]).toMatchObject({ overLimit: true, blocked: false, resetSeconds: 900 });
    limiter.reset(); // Redis is back: counts go, blocks stay.
    at(120_000);
    expect(limiter.decide([other], 1)[0]).toMatchObject({ blocked: true, resetSeconds: 780 });
    expect(cache.refusedFor(blockKey(login, hash(['198.51.100.8'])))).toBe(780_000);
  });

  it("counts each check's own addend, 0 deciding without counting", () => {
    const { limiter } = setup();
    const heavy = { rule: rule('heavy', 5, 60), values: ['u'], addend: 4 };
    const peek = { rule: rule('peek', 1, 60), values: ['u'], addend: 0 };
    expect(limiter.decide([heavy, peek], 1).map((d) => d.remaining)).toEqual([1, 1]);
    // Nothing was counted for peek: one hit of the call's addend still fits, then none.
    expect(limiter.decide([{ rule: peek.rule, values: ['u'] }], 1)[0]).toMatchObject({
      overLimit: false,
      remaining: 0,
    });
    expect(over(limiter.decide([heavy], 1))).toEqual([true]);
  });

  it('keeps at most maxKeys counters', () => {
    const { limiter } = setup(1, 10);
    for (let i = 0; i < 50; i++) limiter.decide([{ rule: rule('r', 5, 60), values: [`u${i}`] }], 1);
    expect(limiter.size).toBe(10);
  });
});

describe('LocalCache', () => {
  it('answers a refusal until it ends, and only for as many hits or more', () => {
    let now = 0;
    const cache = new LocalCache({ maxEntries: 10, clock: () => now });
    cache.remember('k', 5000, 2);
    expect(cache.refusedFor('k', 2)).toBe(5000);
    expect(cache.refusedFor('k', 1)).toBe(0);
    now = 5000;
    expect(cache.refusedFor('k', 2)).toBe(0);
    expect(cache.size).toBe(0);
  });

  it('keys over-limit entries by the limit definition, so a changed limit misses', () => {
    const cache = new LocalCache({ maxEntries: 10 });
    const before = rule('user', 300, 60);
    cache.remember(counterKey(before, 'h'), 30_000);
    expect(cache.refusedFor(counterKey(before, 'h'))).toBeGreaterThan(0);
    expect(cache.refusedFor(counterKey(rule('user', 600, 60), 'h'))).toBe(0);
    expect(cache.refusedFor(counterKey(rule('user', 300, 60, { algorithm: 'sliding' }), 'h'))).toBe(0);
  });

  it('stays within maxEntries, and keeps nothing with 0', () => {
    const cache = new LocalCache({ maxEntries: 3 });
    for (let i = 0; i < 10; i++) cache.remember(`k${i}`, 60_000);
    expect(cache.size).toBe(3);
    expect(cache.refusedFor('k9')).toBeGreaterThan(0);
    const none = new LocalCache({ maxEntries: 0 });
    none.remember('k', 60_000);
    expect(none.size).toBe(0);
  });

  it('drops the soonest-expiring entry when full, and counts live ones dropped', () => {
    let now = 0;
    let evicted = 0;
    const cache = new LocalCache({ maxEntries: 3, clock: () => now, onEvict: () => evicted++ });
    cache.remember('long', 900_000, 1, 'd');
    cache.remember('short', 10_000);
    cache.remember('middle', 60_000);
    cache.remember('newest', 30_000);
    expect(cache.refusedFor('short')).toBe(0);
    expect(cache.refusedFor('long', 1, 'd')).toBe(900_000);
    expect(cache.refusedFor('middle')).toBe(60_000);
    expect(cache.refusedFor('newest')).toBe(30_000);
    expect([evicted, cache.evictions]).toEqual([1, 1]);
    // A replaced entry's old expiry is not the one evicted by.
    cache.remember('newest', 500_000);
    now = 1;
    cache.remember('another', 700_000);
    expect(cache.refusedFor('middle')).toBe(0);
    expect(cache.refusedFor('newest')).toBe(499_999);
    // An expired entry makes the room, uncounted.
    now = 600_000;
    cache.remember('late', 1_000);
    expect(cache.evictions).toBe(2);
    expect(cache.size).toBe(3);
  });

  it('answers a block only for the rule definition it was earned under', () => {
    const cache = new LocalCache({ maxEntries: 10, clock: () => 0 });
    cache.remember('block', 900_000, 1, '0 5 60 900 5 0');
    expect(cache.refusedFor('block', 1, '0 5 60 900 5 0')).toBe(900_000);
    expect(cache.refusedFor('block', 1, '0 10 60 900 10 0')).toBe(0);
    expect(cache.blocks).toBe(1);
  });
});
