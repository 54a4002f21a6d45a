import { RateLimitAlgorithm, RateLimitPolicy, RateLimitRule } from '@sekisho/proto/sekisho/policy/v1/policy';
import { descriptorKeys as k, rateLimitDomain } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import { compilePolicy, type DescriptorEntry, PolicyError } from './compile';

const rule = (id: string, match: Array<[string, string]>, extra: Partial<RateLimitRule> = {}): RateLimitRule =>
  RateLimitRule.fromPartial({
    id,
    match: match.map(([key, value]) => ({ key, value })),
    requestsPerWindow: 10,
    windowSeconds: 60,
    blockSeconds: 0,
    ...extra,
  });

// The rules the control plane generates for the reference design's limits.
const policy = compilePolicy(
  RateLimitPolicy.fromPartial({
    domain: rateLimitDomain,
    rules: [
      rule('authenticated/user/60s', [
        [k.limitClass, 'authenticated'],
        [k.user, ''],
      ]),
      rule(
        'authenticated/user/3600s',
        [
          [k.limitClass, 'authenticated'],
          [k.user, ''],
        ],
        { windowSeconds: 3600, requestsPerWindow: 1000 },
      ),
      rule('unauthenticated/ip/60s', [
        [k.limitClass, 'unauthenticated'],
        [k.anonymous, 'true'],
        [k.remoteAddress, ''],
      ]),
      rule('route:create-appointment/user/60s', [
        [k.route, 'create-appointment'],
        [k.user, ''],
      ]),
      rule('route:auth/ip/60s', [
        [k.route, 'auth'],
        [k.remoteAddress, ''],
      ]),
    ],
  }),
);

const d = (...entries: Array<[string, string]>): DescriptorEntry[] => entries.map(([key, value]) => ({ key, value }));

describe('compilePolicy: matching descriptors to rules', () => {
  const cases: Array<{ name: string; descriptor: DescriptorEntry[]; rules: string[]; values: string[][] }> = [
    {
      name: 'an authenticated user matches both windows, counted by user id',
      descriptor: d([k.limitClass, 'authenticated'], [k.user, 'uid-1']),
      rules: ['authenticated/user/60s', 'authenticated/user/3600s'],
      values: [['uid-1'], ['uid-1']],
    },
    {
      name: 'an anonymous caller is counted by IP',
      descriptor: d([k.limitClass, 'unauthenticated'], [k.anonymous, 'true'], [k.remoteAddress, '203.0.113.9']),
      rules: ['unauthenticated/ip/60s'],
      values: [['203.0.113.9']],
    },
    {
      name: 'a per-route user limit matches only its route',
      descriptor: d([k.route, 'create-appointment'], [k.user, 'uid-1']),
      rules: ['route:create-appointment/user/60s'],
      values: [['uid-1']],
    },
    {
      name: 'a fixed value that differs does not match',
      descriptor: d([k.route, 'send-message'], [k.user, 'uid-1']),
      rules: [],
      values: [],
    },
    {
      name: 'the same keys in another order do not match',
      descriptor: d([k.user, 'uid-1'], [k.limitClass, 'authenticated']),
      rules: [],
      values: [],
    },
    {
      name: 'a descriptor with an extra entry does not match a shorter rule',
      descriptor: d([k.limitClass, 'authenticated'], [k.user, 'uid-1'], [k.remoteAddress, '198.51.100.1']),
      rules: [],
      values: [],
    },
    {
      name: 'a prefix of a rule does not match it',
      descriptor: d([k.limitClass, 'authenticated']),
      rules: [],
      values: [],
    },
    {
      name: 'a per-route IP limit keys on the route and the address',
      descriptor: d([k.route, 'auth'], [k.remoteAddress, '198.51.100.1']),
      rules: ['route:auth/ip/60s'],
      values: [['198.51.100.1']],
    },
    { name: 'an empty descriptor matches nothing', descriptor: [], rules: [], values: [] },
  ];

  it.each(cases)('$name', ({ descriptor, rules, values }) => {
    const matches = policy.match(descriptor);
    expect(matches.map((m) => m.rule.id)).toEqual(rules);
    expect(matches.map((m) => m.values)).toEqual(values);
  });

  it('keeps the domain and every rule', () => {
    expect(policy.domain).toBe(rateLimitDomain);
    expect(policy.rules).toHaveLength(5);
  });

  it('records which positions are fixed and which are counted', () => {
    const [unauth] = policy.match(
      d([k.limitClass, 'unauthenticated'], [k.anonymous, 'true'], [k.remoteAddress, '203.0.113.9']),
    );
    expect(unauth?.rule.fixed).toEqual([
      { index: 0, value: 'unauthenticated' },
      { index: 1, value: 'true' },
    ]);
    expect(unauth?.rule.counted).toEqual([2]);
  });
});

describe('compilePolicy: validation (a thrown PolicyError is a NACK)', () => {
  const ok = rule('a', [[k.user, '']]);
  const cases: Array<{ name: string; policy: Partial<RateLimitPolicy>; message: RegExp }> = [
    { name: 'an empty domain', policy: { domain: '', rules: [ok] }, message: /empty domain/ },
    {
      name: 'an empty rule id',
      policy: { domain: 'd', rules: [rule('', [[k.user, '']])] },
      message: /rule #0.*empty id/,
    },
    {
      name: 'a duplicate rule id',
      policy: { domain: 'd', rules: [ok, rule('a', [[k.remoteAddress, '']])] },
      message: /"a" is used more than once/,
    },
    {
      name: 'braces in a rule id (they would break the Redis hash tag)',
      policy: { domain: 'd', rules: [rule('a{b}', [[k.user, '']])] },
      message: /braces/,
    },
    {
      name: 'a rule without match entries',
      policy: { domain: 'd', rules: [rule('a', [])] },
      message: /matches no descriptor entries/,
    },
    {
      name: 'a match entry without a key',
      policy: { domain: 'd', rules: [rule('a', [['', 'x']])] },
      message: /entry #0 has an empty key/,
    },
    {
      name: 'a limit of 0',
      policy: { domain: 'd', rules: [rule('a', [[k.user, '']], { requestsPerWindow: 0 })] },
      message: /requests_per_window must be greater than 0/,
    },
    {
      name: 'a window of 0',
      policy: { domain: 'd', rules: [rule('a', [[k.user, '']], { windowSeconds: 0 })] },
      message: /window_seconds must be greater than 0/,
    },
    {
      name: 'an algorithm this service does not know',
      policy: { domain: 'd', rules: [rule('a', [[k.user, '']], { algorithm: 7 as RateLimitAlgorithm })] },
      message: /rule "a": algorithm 7 is not known/,
    },
    {
      name: 'a burst on a fixed window',
      policy: { domain: 'd', rules: [rule('a', [[k.user, '']], { burst: 20 })] },
      message: /burst applies only to the TOKEN_BUCKET algorithm/,
    },
    {
      name: 'a sliding window above its bound',
      policy: {
        domain: 'd',
        rules: [rule('a', [[k.user, '']], { algorithm: RateLimitAlgorithm.SLIDING_WINDOW, requestsPerWindow: 10_001 })],
      },
      message: /SLIDING_WINDOW limit must be at most 10000/,
    },
  ];

  it.each(cases)('refuses $name', ({ policy: input, message }) => {
    const attempt = () => compilePolicy(RateLimitPolicy.fromPartial(input));
    expect(attempt).toThrow(PolicyError);
    expect(attempt).toThrow(message);
  });

  it('compiles each algorithm, with the burst defaulting to the limit and shadow kept', () => {
    const compiled = compilePolicy(
      RateLimitPolicy.fromPartial({
        domain: 'd',
        rules: [
          rule('f', [[k.user, '']]),
          rule('s', [[k.user, '']], { algorithm: RateLimitAlgorithm.SLIDING_WINDOW, shadow: true }),
          rule('b', [[k.user, '']], { algorithm: RateLimitAlgorithm.TOKEN_BUCKET, burst: 200 }),
          rule('b0', [[k.user, '']], { algorithm: RateLimitAlgorithm.TOKEN_BUCKET }),
        ],
      }),
    );
    expect(compiled.rules.map((r) => [r.id, r.algorithm, r.burst, r.shadow])).toEqual([
      ['f', 'fixed', 0, false],
      ['s', 'sliding', 0, true],
      ['b', 'tokenBucket', 200, false],
      ['b0', 'tokenBucket', 10, false],
    ]);
  });

  it('accepts a policy without rules (nothing is limited)', () => {
    const empty = compilePolicy(RateLimitPolicy.fromPartial({ domain: 'd', rules: [] }));
    expect(empty.match(d([k.user, 'u']))).toEqual([]);
  });
});
