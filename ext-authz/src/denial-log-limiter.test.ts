import { describe, expect, it } from 'vitest';
import { DenialLogLimiter, type DroppedSummary } from './denial-log-limiter';

function limiter(limits: { perClient: number; perCause: number; maxKeys?: number }) {
  let now = 0;
  const summaries: Array<{ dropped: Record<string, number>; windowMs: number }> = [];
  const l = new DenialLogLimiter(
    { ...limits, windowMs: 60_000 },
    () => now,
    (dropped: DroppedSummary, windowMs) => summaries.push({ dropped: Object.fromEntries(dropped), windowMs }),
  );
  const admitted = (cause: string, ip: string | undefined, times: number) =>
    Array.from({ length: times }, () => l.admit(cause, ip)).filter(Boolean).length;
  return { l, admitted, summaries, advance: (ms: number) => (now += ms) };
}

describe('DenialLogLimiter', () => {
  it('writes perClient records per cause and IP in a window, then leaves the rest out', () => {
    const { admitted } = limiter({ perClient: 3, perCause: 100 });
    expect(admitted('failed_auth:signature_invalid', '203.0.113.7', 50)).toBe(3);
    // Another client, and another cause from the same client, have their own allowance.
    expect(admitted('failed_auth:signature_invalid', '203.0.113.8', 5)).toBe(3);
    expect(admitted('failed_auth:expired', '203.0.113.7', 5)).toBe(3);
  });

  it('bounds a cause over every client together (a flood from many addresses)', () => {
    const { admitted } = limiter({ perClient: 3, perCause: 10 });
    let total = 0;
    for (let i = 0; i < 100; i++) total += admitted('failed_auth:kid_unknown', `198.51.100.${i}`, 1);
    expect(total).toBe(10);
  });

  it('starts afresh in the next window and summarises what the last one left out', () => {
    const { admitted, summaries, advance } = limiter({ perClient: 2, perCause: 100 });
    admitted('failed_auth:signature_invalid', '203.0.113.7', 12);
    admitted('permission_denied:not_owner', '203.0.113.7', 3);
    expect(summaries).toEqual([]);
    advance(59_999);
    expect(admitted('failed_auth:signature_invalid', '203.0.113.7', 1)).toBe(0);
    advance(1);
    expect(admitted('failed_auth:signature_invalid', '203.0.113.7', 1)).toBe(1);
    expect(summaries).toEqual([
      { dropped: { 'failed_auth:signature_invalid': 11, 'permission_denied:not_owner': 1 }, windowMs: 60_000 },
    ]);
    advance(60_000);
    admitted('failed_auth:signature_invalid', '203.0.113.7', 1);
    // A window without drops says nothing.
    expect(summaries).toHaveLength(1);
  });

  it('keeps at most maxKeys clients per window, the others bounded by the cause limit alone', () => {
    const { l, admitted } = limiter({ perClient: 1, perCause: 1_000, maxKeys: 2 });
    expect(admitted('c', 'a', 5) + admitted('c', 'b', 5)).toBe(2);
    // Beyond the table every new client is admitted (there is no entry to count it), up to perCause.
    expect(admitted('c', 'z', 3)).toBe(3);
    expect(l.admit('c', 'a')).toBe(false);
  });

  it('treats a request without a known IP as one client', () => {
    const { admitted } = limiter({ perClient: 2, perCause: 100 });
    expect(admitted('failed_auth:malformed', undefined, 5)).toBe(2);
  });
});
