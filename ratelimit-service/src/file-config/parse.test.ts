import { describe, expect, it } from 'vitest';
import { ConfigFileError, parseConfigFile } from './parse';

const refusal = (source: string): ConfigFileError => {
  try {
    parseConfigFile('limits.yaml', source);
  } catch (error) {
    if (error instanceof ConfigFileError) return error;
    throw error;
  }
  throw new Error('the file was accepted');
};

describe('parseConfigFile', () => {
  it('accepts envoyproxy/ratelimit files as written, every supported key included', () => {
    const config = parseConfigFile(
      'limits.yaml',
      `
domain: edge_proxy
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: destination_cluster
    value: mock
    descriptors:
      - key: path
        value: /api/*
        share_threshold: true
        value_to_metric: true
        rate_limit: { unit: Minute, requests_per_unit: 20, name: api }
        detailed_metric: true
        shadow_mode: true
        quota_mode: false
      - key: path
        value: /health
        rate_limit:
          unlimited: true
          replaces:
            - name: api
  - key: port
    value: 8080
`,
    );
    expect(config.domain).toBe('edge_proxy');
    expect(config.descriptors?.[1]?.descriptors?.[0]).toMatchObject({
      value: '/api/*',
      rate_limit: { unit: 'Minute', requests_per_unit: 20, name: 'api' },
      shadow_mode: true,
    });
    // A number where the format expects text is read as written, as that project's decoder does.
    expect(config.descriptors?.[2]?.value).toBe('8080');
  });

  it('reads a value written like an octal number as its text', () => {
    expect(
      parseConfigFile('f.yaml', 'domain: d\ndescriptors:\n  - key: k\n    value: 010\n').descriptors?.[0]?.value,
    ).toBe('010');
  });

  it('treats empty values (rate_limit:, descriptors:) as absent, as that project does', () => {
    expect(parseConfigFile('f.yaml', 'domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n').descriptors).toEqual([
      { key: 'k' },
    ]);
  });

  it.each([
    ['an empty file', '', '', 'the file is empty'],
    ['a YAML syntax error', 'domain: [d', 'line 1, column', ''],
    ['a missing domain', 'descriptors: []', 'domain', ''],
    ['an empty domain', 'domain: ""', 'domain', 'must not be empty'],
    ['an unknown top-level key', 'domain: d\nrules: []', 'rules', 'unknown key "rules"'],
    [
      'an unknown descriptor key',
      'domain: d\ndescriptors:\n  - key: k\n    valu: v',
      'descriptors[0].valu',
      'unknown key "valu"',
    ],
    [
      'an unknown rate_limit key',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, burst: 2 }',
      'descriptors[0].rate_limit.burst',
      'unknown key "burst"',
    ],
    ['a duplicate top-level key', 'domain: d\ndomain: e', 'domain', 'duplicate key "domain"'],
    [
      'a duplicate key in a descriptor',
      'domain: d\ndescriptors:\n  - key: k\n    value: a\n    value: b',
      'descriptors[0].value',
      'duplicate key "value"',
    ],
    [
      'a duplicate key in a nested rate_limit',
      'domain: d\ndescriptors:\n  - key: k\n    descriptors:\n      - key: j\n        rate_limit:\n          unit: second\n          unit: minute\n          requests_per_unit: 1',
      'descriptors[0].descriptors[0].rate_limit.unit',
      'duplicate key "unit"',
    ],
    ['a descriptor without key', 'domain: d\ndescriptors:\n  - value: v', 'descriptors[0].key', ''],
    ['an empty key', 'domain: d\ndescriptors:\n  - key: ""', 'descriptors[0].key', 'must not be empty'],
    ['descriptors that are not a list', 'domain: d\ndescriptors: {key: k}', 'descriptors', ''],
    [
      'a rate_limit without unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { requests_per_unit: 5 }',
      'descriptors[0].rate_limit.unit',
      'a rate_limit needs a unit (or unlimited: true)',
    ],
    [
      'an unknown unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 5 }',
      'descriptors[0].rate_limit.unit',
      'unknown unit "fortnight"',
    ],
    [
      'the UNKNOWN unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: unknown, requests_per_unit: 5 }',
      'descriptors[0].rate_limit.unit',
      'unknown unit',
    ],
    [
      'a rate_limit without requests_per_unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second }',
      'descriptors[0].rate_limit.requests_per_unit',
      'a rate_limit needs requests_per_unit',
    ],
    [
      'a negative requests_per_unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: -1 }',
      'descriptors[0].rate_limit.requests_per_unit',
      'must not be negative',
    ],
    [
      'a fractional requests_per_unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1.5 }',
      'descriptors[0].rate_limit.requests_per_unit',
      'must be a whole number',
    ],
    [
      'a requests_per_unit beyond 32 bits',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 4294967296 }',
      'descriptors[0].rate_limit.requests_per_unit',
      'must fit in 32 bits',
    ],
    [
      'a requests_per_unit written as text',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: "5" }',
      'descriptors[0].rate_limit.requests_per_unit',
      '',
    ],
    [
      'unlimited with a unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unlimited: true, unit: second }',
      'descriptors[0].rate_limit.unit',
      'an unlimited rate_limit must not have a unit',
    ],
    [
      'unlimited with requests_per_unit',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unlimited: true, requests_per_unit: 5 }',
      'descriptors[0].rate_limit.requests_per_unit',
      'an unlimited rate_limit must not have requests_per_unit',
    ],
    [
      'a replaces entry without name',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, replaces: [{}] }',
      'descriptors[0].rate_limit.replaces[0].name',
      '',
    ],
    [
      'a rate_limit replacing itself',
      'domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, name: a, replaces: [{ name: a }] }',
      'descriptors[0].rate_limit.replaces[0].name',
      'a rate_limit cannot replace itself',
    ],
    [
      'shadow_mode that is not a boolean',
      'domain: d\ndescriptors:\n  - key: k\n    shadow_mode: sometimes',
      'descriptors[0].shadow_mode',
      '',
    ],
    [
      'share_threshold without a wildcard',
      'domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true',
      'descriptors[0].share_threshold',
      'share_threshold needs a wildcard value',
    ],
    [
      'metadata',
      'domain: d\ndescriptors:\n  - key: k\n    metadata: { team: a }',
      'descriptors[0].metadata',
      'metadata (response dynamic metadata) is not supported',
    ],
    [
      'two descriptors with the same key and value',
      'domain: d\ndescriptors:\n  - key: k\n    value: v\n  - key: j\n  - key: k\n    value: v',
      'descriptors[2]',
      'duplicate descriptor "k=v" (first at descriptors[0])',
    ],
    [
      'two key-only descriptors with the same key, nested',
      'domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: k\n      - key: k\n        value: ""',
      'descriptors[0].descriptors[1]',
      'duplicate descriptor "k"',
    ],
    ['a non-string key', 'domain: d\n? [a]\n: b', '', 'keys must be strings'],
    ['two YAML documents', 'domain: d\n---\ndomain: e\n', 'line', ''],
    [
      'an alias bomb',
      `domain: d\nx0: &a0 [1, 1]\n${Array.from({ length: 12 }, (_, i) => `x${i + 1}: &a${i + 1} [*a${i}, *a${i}]`).join('\n')}\n`,
      '',
      'aliases expanded',
    ],
    [
      'descriptors nested absurdly deep',
      `domain: d\ndescriptors: ${'[{key: k, descriptors: '.repeat(40)}[]${'}]'.repeat(40)}\n`,
      'descriptors[0]',
      'nested deeper than 64 levels',
    ],
  ])('refuses %s, naming the file and %j', (_case, source, path, reason) => {
    const error = refusal(source);
    expect(error.file).toBe('limits.yaml');
    expect(error.path.startsWith(path)).toBe(true);
    expect(error.reason).toContain(reason);
    expect(error.message).toContain('limits.yaml');
  });
});
