// Golden-file tests of the translators, like Envoy Gateway's: testdata/in/<case>.yaml (and
// the salon example) → testdata/out/<case>.<kind>.yaml, every Any expanded. A change to the
// generated config shows up in review as a diff of these files.
//   Rewrite them after an intended change: UPDATE_GOLDEN=1 npx vitest run --project unit control-plane/src/translate
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { compileDefinition } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { renderAny } from './any';
import { translateSidecar } from './sidecar/index';

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

/**
 * Parts every listener has in the same shape are pinned in one case and shown elsewhere as a
 * digest, so a change to one filter is a readable diff in its own case and a one-line digest
 * change in the others, instead of hundreds of identical lines in every file:
 * - the local-reply table (every connection manager has it) is written out only in `local-replies`;
 * - a filter chain whose filters equal an earlier chain's of the same listener (the TLS listener
 *   repeats each chain per certificate) names that chain.
 */
const localRepliesCase = 'local-replies';

function renderKind(resources: ResourcesByType, types: readonly string[], caseName: string): string {
  const rendered = types.flatMap((typeUrl) =>
    (resources.get(typeUrl) ?? []).map((resource) => ({ name: resource.name, resource: renderAny(resource.resource) })),
  );
  const condensed = caseName === localRepliesCase ? rendered : (digestLocalReplies(rendered) as typeof rendered);
  return stringify(condensed.map(shareRepeatedChains), { lineWidth: 0, aliasDuplicateObjects: false });
}

function digestLocalReplies(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(digestLocalReplies);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, inner]) =>
      key === 'localReplyConfig'
        ? [key, { sha256: digest(inner), writtenOutIn: `${localRepliesCase}.listeners.yaml` }]
        : [key, digestLocalReplies(inner)],
    ),
  );
}

function shareRepeatedChains(entry: { name: string; resource: unknown }): { name: string; resource: unknown } {
  const listener = entry.resource as { filterChains?: Array<{ name?: string; filters?: unknown }> };
  if (!Array.isArray(listener?.filterChains)) return entry;
  const seen = new Map<string, string>();
  const filterChains = listener.filterChains.map((chain, index) => {
    const key = JSON.stringify(chain.filters);
    const earlier = seen.get(key);
    if (earlier !== undefined) return { ...chain, filters: { sameAsChain: earlier } };
    seen.set(key, chain.name || `#${index}`);
    return chain;
  });
  return { ...entry, resource: { ...listener, filterChains } };
}

function digest(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
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
          const actual = renderKind(compiled.resources, types, testCase.name);
          const goldenFile = join(testdata, 'out', `${testCase.name}.${kind}.yaml`);
          if (update) writeFileSync(goldenFile, actual);
          expect(existsSync(goldenFile), `${goldenFile} is missing; run with UPDATE_GOLDEN=1`).toBe(true);
          expect(actual, `differs from ${goldenFile}; if intended, run with UPDATE_GOLDEN=1`).toBe(
            readFileSync(goldenFile, 'utf8'),
          );
        });
      }

      // A sidecar view's own resources (its workload Secrets come from the mesh CA, not the translator).
      for (const service of compiled.ok ? (compiled.ir.mesh?.services ?? []) : []) {
        for (const [kind, types] of Object.entries(kinds)) {
          if (kind === 'policy' || kind === 'secrets') continue;
          const golden = `${testCase.name}.sidecar-${service.name}.${kind}.yaml`;
          it(`renders sidecar:${service.name} ${kind} as in testdata/out/${golden}`, () => {
            if (!compiled.ok) throw new Error('does not compile');
            const actual = renderKind(translateSidecar(compiled.ir, service), types, testCase.name);
            const goldenFile = join(testdata, 'out', golden);
            if (update) writeFileSync(goldenFile, actual);
            expect(existsSync(goldenFile), `${goldenFile} is missing; run with UPDATE_GOLDEN=1`).toBe(true);
            expect(actual, `differs from ${goldenFile}; if intended, run with UPDATE_GOLDEN=1`).toBe(
              readFileSync(goldenFile, 'utf8'),
            );
          });
        }
      }
    });
  }
});
