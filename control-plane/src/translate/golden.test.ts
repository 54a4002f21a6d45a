// Golden-file tests of the translators, like Envoy Gateway's: testdata/in/<case>.yaml (and
// the salon example) → testdata/out/<case>.<kind>.yaml, every Any expanded. A change to the
// generated config shows up in review as a diff of these files.
//   Rewrite them after an intended change: UPDATE_GOLDEN=1 npx vitest run --project unit control-plane/src/translate
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { compileDefinition } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { renderAny } from './any';

const testdata = resolve(import.meta.dirname, 'testdata');
const update = process.env.UPDATE_GOLDEN === '1';

const cases: Array<{ name: string; file: string }> = [
  { name: 'salon', file: resolve(import.meta.dirname, '../../examples/salon.gateway.yaml') },
  ...readdirSync(join(testdata, 'in'))
    .filter((file) => file.endsWith('.yaml'))
    .sort()
    .map((file) => ({ name: basename(file, '.yaml'), file: join(testdata, 'in', file) })),
];

const kinds = {
  clusters: [typeUrls.cluster],
  endpoints: [typeUrls.endpoint],
  secrets: [typeUrls.secret],
  listeners: [typeUrls.listener],
  routes: [typeUrls.route],
  policy: [typeUrls.authzPolicy, typeUrls.rateLimitPolicy],
} as const;

function renderKind(resources: ResourcesByType, types: readonly string[]): string {
  const rendered = types.flatMap((typeUrl) =>
    (resources.get(typeUrl) ?? []).map((resource) => ({ name: resource.name, resource: renderAny(resource.resource) })),
  );
  return stringify(rendered, { lineWidth: 0, aliasDuplicateObjects: false });
}

describe('translator golden files', () => {
  it('has the five required cases', () => {
    expect(cases.map((c) => c.name)).toEqual(
      expect.arrayContaining(['salon', 'minimal', 'dns-endpoints', 'auth-none-ip-limit', 'outlier-detection']),
    );
  });

  it('has one case per route and service feature', () => {
    expect(cases.map((c) => c.name)).toEqual(
      expect.arrayContaining([
        ...['route-regex', 'route-template', 'route-methods', 'route-header-query-match', 'route-rewrite-regex'],
        ...['route-headers', 'route-retries', 'route-weighted', 'route-direct-response', 'route-redirect'],
        ...['service-http2', 'service-tls', 'service-health-check', 'service-outlier-full'],
        ...['service-circuit-breakers', 'service-lb-policy', 'policy-service-replicas'],
      ]),
    );
  });

  for (const testCase of cases) {
    describe(testCase.name, () => {
      const compiled = compileDefinition(parse(readFileSync(testCase.file, 'utf8')), {
        baseDir: dirname(testCase.file),
      });

      it('compiles', () => {
        expect(compiled.ok ? [] : compiled.errors).toEqual([]);
      });

      for (const [kind, types] of Object.entries(kinds)) {
        it(`renders ${kind} as in testdata/out/${testCase.name}.${kind}.yaml`, () => {
          if (!compiled.ok) throw new Error('does not compile');
          const actual = renderKind(compiled.resources, types);
          const goldenFile = join(testdata, 'out', `${testCase.name}.${kind}.yaml`);
          if (update) writeFileSync(goldenFile, actual);
          expect(existsSync(goldenFile), `${goldenFile} is missing; run with UPDATE_GOLDEN=1`).toBe(true);
          expect(actual, `differs from ${goldenFile}; if intended, run with UPDATE_GOLDEN=1`).toBe(
            readFileSync(goldenFile, 'utf8'),
          );
        });
      }
    });
  }
});
