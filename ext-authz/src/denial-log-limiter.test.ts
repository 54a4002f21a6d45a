import { describe, expect, it } from 'vitest';
import { DenialLogLimiter, type DroppedSummary } from './denial-log-limiter';

/** A limiter on a hand-driven clock, with timers the test fires itself. */
function limiter(limits: { perClient: number; perCause: number; maxKeys?: number }) {
  let now = 0;
  const summaries: Array<{ dropped: Record<string, number>; windowMs: number }> = [];
  const timers: Array<{ run: () => void; at: number; cancelled: boolean }> = [];
  const l = new DenialLogLimiter(
    { ...limits, windowMs: 60_000 },
    () => now,
    (dropped: DroppedSummary, windowMs) => summaries.push({ dropped: Object.fromEntries(dropped), windowMs }),
    (run, delayMs) => {
      const timer = { run, at: now + delayMs, cancelled: false };
      timers.push(timer);
      return () => {
        timer.cancelled = true;
      };
    },
  );
  const admitted = (cause: string, ip: string | undefined, times: number) =>
    Array.from({ length: times }, () => l.admit(cause, ip)).filter(Boolean).length;
  const pending = () => timers.filter((t) => !t.cancelled);
  /** Moves the clock and fires every timer due by then, as the event loop would. */
  const advance = (ms: number) => {
    now += ms;
    for (let due = pending().find((t) => t.at <= now); due; due = pending().find((t) => t.at <= now)) {
      due.cancelled = true;
      due.run();
    }
  };
  return { l, admitted, summaries, advance, pending, setClock: (ms: number) => (now = ms) };
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

  it('writes the summary when the window ends, without waiting for another denial', () => {
    const { admitted, summaries, advance, pending } = limiter({ perClient: 1, perCause: 100 });
    admitted('failed_auth:signature_invalid', '203.0.113.7', 1);
    // Nothing left out yet: no timer.
    expect(pending()).toHaveLength(0);
    advance(10_000);
    admitted('failed_auth:signature_invalid', '203.0.113.7', 5);
    admitted('failed_auth:expired', '203.0.113.7', 3);
    // One timer for the window, at its end, however many drops.
    expect(pending()).toMatchObject([{ at: 60_000 }]);
    advance(49_999);
    expect(summaries).toEqual([]);
    advance(1);
    expect(summaries).toEqual([
      { dropped: { 'failed_auth:signature_invalid': 5, 'failed_auth:expired': 2 }, windowMs: 60_000 },
    ]);
    // The flood stopped: nothing more to say, no timer left.
    expect(pending()).toHaveLength(0);
    advance(600_000);
    expect(summaries).toHaveLength(1);
  });

  it('writes the summary once when the next denial comes first, and follows the new window', () => {
    const { admitted, summaries, advance, pending, setClock } = limiter({ perClient: 1, perCause: 100 });
    admitted('c', 'a', 3); // window [0, 60s): 2 left out, timer at 60s
    // The event loop is late: a denial at 70s rolls the window before the timer runs.
    setClock(70_000);
    admitted('c', 'a', 4); // window [70s, 130s): 3 left out
    expect(summaries).toEqual([{ dropped: { c: 2 }, windowMs: 60_000 }]);
    advance(0); // the old timer runs now: the new window has not ended, so it waits for its end
    expect(summaries).toHaveLength(1);
    expect(pending()).toMatchObject([{ at: 130_000 }]);
    advance(60_000);
    expect(summaries).toEqual([
      { dropped: { c: 2 }, windowMs: 60_000 },
      { dropped: { c: 3 }, windowMs: 60_000 },
    ]);
  });

  it('re-arms a timer that fires before the window ended', () => {
    const { l, admitted, summaries, pending, setClock } = limiter({ perClient: 1, perCause: 100 });
    admitted('c', 'a', 2);
    const [timer] = pending();
    setClock(59_990);
    timer?.run(); // early
    expect(summaries).toEqual([]);
    expect(pending().at(-1)).toMatchObject({ at: 60_000 });
    expect(l.admit('c', 'a')).toBe(false);
  });

  it('writes what the running window left out on close, and cancels its timer', () => {
    const { l, admitted, summaries, advance, pending } = limiter({ perClient: 1, perCause: 100 });
    admitted('c', 'a', 4);
    advance(15_000);
    l.close();
    expect(summaries).toEqual([{ dropped: { c: 3 }, windowMs: 15_000 }]);
    expect(pending()).toHaveLength(0);
    l.close();
    expect(summaries).toHaveLength(1);
  });

  it('writes the summary on a real timer and clock by default', async () => {
    const summaries: Array<Record<string, number>> = [];
    const l = new DenialLogLimiter(
      { perClient: 1, perCause: 100, windowMs: 50 },
      () => performance.now(),
      (dropped) => summaries.push(Object.fromEntries(dropped)),
    );
    l.admit('c', 'a');
    l.admit('c', 'a');
    const deadline = Date.now() + 5_000;
    while (summaries.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(summaries).toEqual([{ c: 1 }]);
    l.close();
  });
});
