import {
  RateLimitResponse_Code as Code,
  RateLimitResponse_RateLimit_Unit as Unit,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { describe, expect, it } from 'vitest';
import type { LimitDecision } from './limiter/types';
import { decidedResponse, mostRestrictive, undecidedResponse, unitFor } from './response';

const decision = (
  id: string,
  limit: number,
  window: number,
  state: { remaining: number; reset: number; over?: boolean; blocked?: boolean },
): LimitDecision => ({
  rule: { id, requestsPerWindow: limit, windowSeconds: window, blockSeconds: 0 },
  overLimit: state.over ?? false,
  blocked: state.blocked ?? false,
  remaining: state.remaining,
  resetSeconds: state.reset,
});

const headersOf = (response: ReturnType<typeof decidedResponse>) =>
  Object.fromEntries(response.responseHeadersToAdd.map((h) => [h.key, h.value]));

describe('unitFor', () => {
  it.each([
    [1, Unit.SECOND],
    [60, Unit.MINUTE],
    [3600, Unit.HOUR],
    [86_400, Unit.DAY],
    [900, Unit.UNKNOWN],
    [30, Unit.UNKNOWN],
  ])('a %i s window is %s', (window, unit) => {
    expect(unitFor(window)).toBe(unit);
  });
});

describe('mostRestrictive', () => {
  const minute = decision('m', 300, 60, { remaining: 250, reset: 20 });
  const hour = decision('h', 1000, 3600, { remaining: 5, reset: 1800 });
  const overMinute = decision('m', 300, 60, { remaining: 0, reset: 20, over: true });
  const overHour = decision('h', 1000, 3600, { remaining: 0, reset: 1800, over: true });
  const tieLater = decision('t', 10, 60, { remaining: 5, reset: 50 });

  it.each([
    { name: 'nothing for no decisions', input: [], chosen: undefined },
    { name: 'the rule with fewer requests left', input: [minute, hour], chosen: hour },
    { name: 'a refusal over any allowance', input: [hour, overMinute], chosen: overMinute },
    { name: 'the refusal that lasts longest', input: [overMinute, overHour], chosen: overHour },
    { name: 'the later reset when as many requests are left', input: [hour, tieLater], chosen: hour },
  ])('picks $name', ({ input, chosen }) => {
    expect(mostRestrictive(input)).toBe(chosen);
  });
});

describe('decidedResponse', () => {
  it('answers OK with the draft-06 RateLimit headers of the tightest rule (when asked) and a status per descriptor', () => {
    const response = decidedResponse(
      [
        [
          decision('m', 300, 60, { remaining: 299, reset: 42 }),
          decision('h', 1000, 3600, { remaining: 10, reset: 900 }),
        ],
        [],
      ],
      'draft-06',
    );
    expect(response.overallCode).toBe(Code.OK);
    expect(response.statuses).toEqual([
      {
        code: Code.OK,
        currentLimit: { name: 'h', requestsPerUnit: 1000, unit: Unit.HOUR },
        limitRemaining: 10,
        durationUntilReset: { seconds: 900, nanos: 0 },
      },
      { code: Code.OK, limitRemaining: 0 },
    ]);
    expect(headersOf(response)).toEqual({
      'ratelimit-limit': '1000',
      'ratelimit-remaining': '10',
      'ratelimit-reset': '900',
      'ratelimit-policy': '300;w=60, 1000;w=3600',
    });
    expect(response.rawBody).toHaveLength(0);
  });

  it('answers OVER_LIMIT with Retry-After when any descriptor is over', () => {
    const response = decidedResponse(
      [
        [decision('route', 5, 60, { remaining: 0, reset: 900, over: true, blocked: true })],
        [decision('m', 300, 60, { remaining: 100, reset: 30 })],
      ],
      'draft-06',
    );
    expect(response.overallCode).toBe(Code.OVER_LIMIT);
    expect(response.statuses.map((s) => s.code)).toEqual([Code.OVER_LIMIT, Code.OK]);
    expect(headersOf(response)).toMatchObject({
      'ratelimit-limit': '5',
      'ratelimit-remaining': '0',
      'ratelimit-reset': '900',
      'retry-after': '900',
    });
  });

  it('sends the current draft (draft-10) fields by default: RateLimit-Policy per limit, RateLimit for the tightest', () => {
    const ok = decidedResponse([
      [decision('authenticated/user/60s', 300, 60, { remaining: 299, reset: 42 })],
      [decision('h', 1000, 3600, { remaining: 10, reset: 900 })],
    ]);
    expect(headersOf(ok)).toEqual({
      'ratelimit-policy': '"authenticated/user/60s";q=300;w=60, "h";q=1000;w=3600',
      ratelimit: '"h";r=10;t=900',
    });
    const refused = decidedResponse(
      [[decision('say "hi"\\', 5, 60, { remaining: 0, reset: 30, over: true })]],
      'draft-10',
    );
    expect(headersOf(refused)).toEqual({
      'ratelimit-policy': '"say \\"hi\\"\\\\";q=5;w=60',
      ratelimit: '"say \\"hi\\"\\\\";r=0;t=30',
      'retry-after': '30',
    });
  });

  it('adds no headers when no rule matched', () => {
    const response = decidedResponse([[], []]);
    expect(response.overallCode).toBe(Code.OK);
    expect(response.responseHeadersToAdd).toEqual([]);
    expect(response.statuses).toHaveLength(2);
  });
});

describe('undecidedResponse', () => {
  it('allows every descriptor', () => {
    const response = undecidedResponse([false, false]);
    expect(response.overallCode).toBe(Code.OK);
    expect(response.statuses.map((s) => s.code)).toEqual([Code.OK, Code.OK]);
    expect(response.responseHeadersToAdd).toEqual([]);
  });

  it('refuses the given descriptors and says when to retry', () => {
    const response = undecidedResponse([true, false]);
    expect(response.overallCode).toBe(Code.OVER_LIMIT);
    expect(response.statuses.map((s) => s.code)).toEqual([Code.OVER_LIMIT, Code.OK]);
    expect(headersOf(response)).toEqual({ 'retry-after': '1' });
  });
});
