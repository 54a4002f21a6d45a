import { describe, expect, it } from 'vitest';
import type { Counter } from './facts';
import { counterWindow, detect } from './rules';
import { referenceRules } from './test-entries';

const now = 1_700_000_000_000;
const MB = 1024 * 1024;

describe('detect', () => {
  it.each<{ counter: Counter; before: number; after: number; rule: string | undefined }>([
    { counter: 'failed_auth', before: 4, after: 5, rule: undefined },
    { counter: 'failed_auth', before: 5, after: 6, rule: 'brute_force' },
    { counter: 'failed_auth', before: 6, after: 7, rule: undefined },
    { counter: 'calls', before: 999, after: 1_000, rule: undefined },
    { counter: 'calls', before: 1_000, after: 1_001, rule: 'suspicious_usage' },
    { counter: 'calls', before: 990, after: 1_040, rule: 'suspicious_usage' },
    { counter: 'bytes', before: 0, after: 100 * MB, rule: undefined },
    { counter: 'bytes', before: 100 * MB, after: 100 * MB + 1, rule: 'data_exfiltration' },
  ])('$counter from $before to $after: $rule', ({ counter, before, after, rule }) => {
    expect(detect(counter, 's', before, after, referenceRules, now)?.rule).toBe(rule);
  });

  it("blocks the IP for the rule's hour from the clock it is given", () => {
    expect(detect('failed_auth', '203.0.113.7', 5, 6, referenceRules, now)).toEqual({
      rule: 'brute_force',
      severity: 'high',
      block: { kind: 'ip', subject: '203.0.113.7', rule: 'brute_force', severity: 'high', untilMs: now + 3_600_000 },
    });
  });

  it('limits a suspicious user to 10 a minute for 30 minutes, and blocks an exfiltrating one for 30', () => {
    expect(detect('calls', 'uid-1', 1_000, 1_001, referenceRules, now)?.block).toEqual({
      kind: 'limit',
      subject: 'uid-1',
      rule: 'suspicious_usage',
      severity: 'medium',
      untilMs: now + 1_800_000,
      limit: 10,
      windowMs: 60_000,
    });
    expect(detect('bytes', 'uid-1', 0, 101 * MB, referenceRules, now)?.block).toMatchObject({
      kind: 'user',
      untilMs: now + 1_800_000,
    });
  });

  it('detects nothing for a rule that is off', () => {
    expect(detect('failed_auth', 'x', 5, 6, { loginRoutes: [] }, now)).toBeUndefined();
  });
});

describe('counterWindow', () => {
  it('keeps a window in 60 buckets of at least a second', () => {
    expect(counterWindow(900_000)).toEqual({ windowMs: 900_000, bucketMs: 15_000 });
    expect(counterWindow(3_600_000)).toEqual({ windowMs: 3_600_000, bucketMs: 60_000 });
    expect(counterWindow(10_000)).toEqual({ windowMs: 10_000, bucketMs: 1_000 });
  });
});
