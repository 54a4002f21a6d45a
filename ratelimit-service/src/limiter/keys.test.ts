import { describe, expect, it } from 'vitest';
import { blockKey, counterKey, keySlot } from './keys';
import type { LimitRule } from './types';

const rule = (extra: Partial<LimitRule> = {}): LimitRule => ({
  id: 'route:book/user/60s',
  domain: 'sekisho',
  requestsPerWindow: 5,
  windowSeconds: 60,
  blockSeconds: 900,
  ...extra,
});

describe('key layout', () => {
  it('tags every key of a domain with the domain (the default), so one call stays in one slot', () => {
    expect(counterKey(rule(), 'h1')).toBe('sekisho:rl:{sekisho}:route:book/user/60s:fixed:60s:5:h1');
    expect(blockKey(rule(), 'h1')).toBe('sekisho:rl:{sekisho}:block:route:book/user/60s:h1');
    const keys = [
      counterKey(rule(), 'h1'),
      counterKey(rule({ id: 'route:book/60s', algorithm: 'sliding' }), 'h2'),
      blockKey(rule({ id: 'auth/ip' }), 'h3'),
    ];
    expect(new Set(keys.map(keySlot)).size).toBe(1);
  });

  it('tags by rule and counted values in the counter layout, a counter and its block together', () => {
    expect(counterKey(rule(), 'h1', 'counter')).toBe('sekisho:rl:{route:book/user/60s:h1}:fixed:60s:5');
    expect(blockKey(rule(), 'h1', 'counter')).toBe('sekisho:rl:{route:book/user/60s:h1}:block');
    expect(keySlot(counterKey(rule(), 'h1', 'counter'))).toBe(keySlot(blockKey(rule(), 'h1', 'counter')));
  });

  it('replaces a domain that braces would cut short by a digest, and keeps it stable', () => {
    const odd = counterKey(rule({ domain: 'a}b' }), 'h');
    expect(odd).toMatch(/^sekisho:rl:\{h[0-9a-f]{24}\}:/);
    expect(odd).toBe(counterKey(rule({ domain: 'a}b' }), 'h'));
  });

  it('computes cluster slots as Redis does (CRC16/XMODEM of the tag)', () => {
    // Redis Cluster specification: CRC16 of "123456789" is 0x31C3.
    expect(keySlot('123456789')).toBe(0x31c3 % 16384);
    expect(keySlot('{user1000}.following')).toBe(keySlot('{user1000}.followers'));
    // The tag runs from the first { to the next }: here "{bar", the same bytes as that key whole.
    expect(keySlot('foo{{bar}}zap')).toBe(keySlot('{bar'));
  });
});
