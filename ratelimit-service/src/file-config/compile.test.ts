import { describe, expect, it } from 'vitest';
import { compileConfigFile, countedValues, metricLabel, wildcardMatches } from './compile';
import { parseConfigFile } from './parse';

const compile = (source: string) => compileConfigFile(parseConfigFile('test.yaml', source));
const d = (...entries: Array<[string, string]>) => entries.map(([key, value]) => ({ key, value }));

// Which limit applies to a request descriptor, by envoyproxy/ratelimit's documented rules.
const config = compile(`
domain: test
descriptors:
  - key: remote_address
    rate_limit: { unit: second, requests_per_unit: 10, name: per_ip }
  - key: remote_address
    value: 10.0.0.1
    rate_limit: { unlimited: true }
  - key: path
    value: /admin*
    rate_limit: { unit: minute, requests_per_unit: 1, name: admin }
  - key: path
    value: /a*
    rate_limit: { unit: minute, requests_per_unit: 2, name: a_prefix }
  - key: path
    value: /files/*.png
    rate_limit: { unit: minute, requests_per_unit: 3, name: png }
  - key: path
    rate_limit: { unit: minute, requests_per_unit: 4, name: any_path }
  - key: path
    value: /exact
    rate_limit: { unit: minute, requests_per_unit: 5, name: exact }
  - key: tenant
    rate_limit: { unit: hour, requests_per_unit: 100, name: tenant }
    descriptors:
      - key: user
        rate_limit: { unit: minute, requests_per_unit: 6, name: tenant_user }
      - key: plan
        value: gold
        descriptors:
          - key: user
            rate_limit: { unit: minute, requests_per_unit: 60, name: gold_user }
  - key: group
    value: g1
    descriptors:
      - key: member
        rate_limit: { unit: day, requests_per_unit: 7, name: g1_member }
  - key: group
    descriptors:
      - key: other
        rate_limit: { unit: day, requests_per_unit: 8, name: group_other }
`);

describe('matching request descriptors against a file (precedence and depth)', () => {
  it.each([
    ['a key-only entry matches any value', d(['remote_address', '10.0.0.9']), 'per_ip'],
    ['an exact value beats the key-only entry', d(['remote_address', '10.0.0.1']), 'unlimited'],
    ['an exact value beats a wildcard that also matches', d(['path', '/exact']), 'exact'],
    ['the first wildcard in file order wins', d(['path', '/admin/users']), 'admin'],
    ['a later wildcard matches what the earlier does not', d(['path', '/about']), 'a_prefix'],
    ['a * in the middle of a value', d(['path', '/files/x/y.png']), 'png'],
    ['a wildcard beats the key-only entry', d(['path', '/files/x.png']), 'png'],
    ['the key-only entry catches what no wildcard matches', d(['path', '/files/x.jpg']), 'any_path'],
    ['a wildcard does not match its prefix with the value of another key', d(['pat', 'h/admin']), undefined],
    ['an unknown key matches nothing', d(['header', 'x']), undefined],
    ['the limit at the exact depth of the request', d(['tenant', 't1']), 'tenant'],
    ['a nested limit at depth 2', d(['tenant', 't1'], ['user', 'u1']), 'tenant_user'],
    [
      'a nested exact value at depth 2, limit at depth 3',
      d(['tenant', 't1'], ['plan', 'gold'], ['user', 'u']),
      'gold_user',
    ],
    ['no limit at depth 2 of that branch', d(['tenant', 't1'], ['plan', 'gold']), undefined],
    ['a request deeper than every rule', d(['tenant', 't1'], ['user', 'u1'], ['extra', 'x']), undefined],
    ['a parent limit does not apply to a deeper request', d(['remote_address', '1.2.3.4'], ['user', 'u1']), undefined],
    ['entries in another order match nothing', d(['user', 'u1'], ['tenant', 't1']), undefined],
    [
      'the exact branch is taken without falling back to the key-only one',
      d(['group', 'g1'], ['other', 'x']),
      undefined,
    ],
    ['the exact branch at depth 2', d(['group', 'g1'], ['member', 'm']), 'g1_member'],
    ['the key-only branch for other values', d(['group', 'g2'], ['other', 'x']), 'group_other'],
    ['an empty descriptor', d(), undefined],
  ])('%s', (_case, entries, expected) => {
    const limit = config.match(entries);
    expect(limit?.unlimited ? 'unlimited' : limit?.name).toBe(expected);
  });

  it('compiles units to their windows, MONTH and YEAR as 30 and 365 days', () => {
    const units = compile(`
domain: u
descriptors:
${['second', 'MINUTE', 'Hour', 'day', 'week', 'month', 'year']
  .map((unit) => `  - key: ${unit}\n    rate_limit: { unit: ${unit}, requests_per_unit: 1 }`)
  .join('\n')}
`);
    expect(units.limits.map((l) => l.windowSeconds)).toEqual([1, 60, 3600, 86_400, 604_800, 2_592_000, 31_536_000]);
  });

  it('gives each rule a Redis-safe id that survives a change of its limit', () => {
    const before = compile(
      'domain: x\ndescriptors:\n  - key: "a b{c}"\n    rate_limit: { unit: second, requests_per_unit: 1 }',
    );
    const after = compile(
      'domain: x\ndescriptors:\n  - key: "a b{c}"\n    rate_limit: { unit: second, requests_per_unit: 9 }',
    );
    const id = before.limits[0]?.id ?? '';
    expect(id).toMatch(/^file:[0-9a-f]{24}$/);
    expect(after.limits[0]?.id).toBe(id);
    expect(before.limits[0]?.statKey).toBe('x.a b{c}');
  });

  it('counts per value, or per pattern with share_threshold', () => {
    const shared = compile(`
domain: s
descriptors:
  - key: path
    value: /api/*
    share_threshold: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: file
    value: a*
    rate_limit: { unit: second, requests_per_unit: 1 }
`);
    const api = shared.match(d(['path', '/api/x'])) ?? expect.unreachable();
    expect(countedValues(api, d(['path', '/api/x']))).toEqual(['/api/*']);
    const file = shared.match(d(['file', 'ab'])) ?? expect.unreachable();
    expect(countedValues(file, d(['file', 'ab']))).toEqual(['ab']);
  });

  it('labels metrics by the stats key, the request with detailed_metric, the value with value_to_metric', () => {
    const labelled = compile(`
domain: m
descriptors:
  - key: k
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: w
    value: x*
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: dm
    detailed_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: v
    value_to_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
`);
    const label = (entries: ReturnType<typeof d>) =>
      metricLabel(labelled.match(entries) ?? expect.unreachable(), entries);
    expect(label(d(['k', 'a']))).toBe('m.k');
    expect(label(d(['w', 'xyz']))).toBe('m.w_x*');
    expect(label(d(['dm', 'b']))).toBe('m.dm_b');
    expect(label(d(['v', 'c']))).toBe('m.v_c');
  });
});

describe('wildcardMatches', () => {
  it.each([
    [['foo', ''], 'foo', true],
    [['foo', ''], 'foobar', true],
    [['foo', ''], 'fo', false],
    [['', ''], '', true],
    [['a', 'b', 'c'], 'axbyc', true],
    [['a', 'b', 'c'], 'abc', true],
    [['a', 'b', 'c'], 'acb', false],
    [['ab', 'ba'], 'aba', false],
    [['', '.png'], 'x.png', true],
  ])('%j against %j: %s', (parts, value, expected) => {
    expect(wildcardMatches(parts, value)).toBe(expected);
  });
});
