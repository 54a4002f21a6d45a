// Golden files of what the injector adds to a pod, in both control channel identity modes: the
// JSONPatch with the sidecar's bootstrap expanded (it travels as a JSON string in the args), so
// a change to the sidecar shows up in review as a diff of these files.
//   Rewrite them after an intended change: UPDATE_GOLDEN=1 npx vitest run --project unit injector
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { configSchema } from './config';
import { injectionPatch } from './patch';
import { sidecarParts } from './sidecar';
import { decide, type Pod } from './workload';

const update = process.env.UPDATE_GOLDEN === '1';
const testdata = join(import.meta.dirname, 'testdata');

// A fixed, obviously fake CA so the golden file does not change from run to run.
const caPem = '-----BEGIN CERTIFICATE-----\nTUlJQ29udHJvbENoYW5uZWxDQQ==\n-----END CERTIFICATE-----\n';

const pod: Pod = {
  metadata: { generateName: 'customer-7d9f-', labels: { 'app.kubernetes.io/name': 'customer' } },
  spec: { serviceAccountName: 'customer', containers: [{ name: 'app', ports: [{ containerPort: 3001 }] }] },
};

function rendered(env: Record<string, string>, annotations: Record<string, string> = {}): string {
  const config = configSchema.parse({ INJECTOR_TLS_CERT_FILE: 'x', INJECTOR_TLS_KEY_FILE: 'y', ...env });
  const object = { ...pod, metadata: { ...pod.metadata, annotations } };
  const decision = decide(
    {
      uid: 'u',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'salon',
      operation: 'CREATE',
      object,
    },
    config,
  );
  if (decision.kind !== 'inject') throw new Error(`not injected: ${JSON.stringify(decision)}`);
  const patch = injectionPatch(decision.pod, sidecarParts(decision.workload, config, { caPem }));
  // Expand the JSON strings (bootstrap, SDS annotation) so the file shows their structure.
  const expand = (value: unknown, key?: string): unknown => {
    if (typeof value === 'string' && value.startsWith('{'))
      return { [`${key ?? 'argument'} (parsed JSON)`]: JSON.parse(value) };
    if (Array.isArray(value)) return value.map((item) => expand(item));
    if (value && typeof value === 'object')
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expand(v, k)]));
    return value;
  };
  return stringify(expand(patch), { lineWidth: 0 });
}

describe('the injection patch (golden)', () => {
  it.each([
    ['csi', {}, {}],
    ['secret', { INJECTOR_XDS_IDENTITY: 'secret' }, {}],
    ['secret-by-annotation', { INJECTOR_XDS_CA_FILE: 'ca.crt' }, { 'sekisho.io/xds-identity': 'secret' }],
  ] as const)('%s mode', (name, env, annotations) => {
    const actual = rendered({ INJECTOR_XDS_CA_FILE: 'ca.crt', ...env }, annotations);
    const goldenFile = join(testdata, `patch.${name}.yaml`);
    if (update) writeFileSync(goldenFile, actual);
    expect(existsSync(goldenFile), `${goldenFile} is missing; run with UPDATE_GOLDEN=1`).toBe(true);
    expect(actual, `differs from ${goldenFile}; if intended, run with UPDATE_GOLDEN=1`).toBe(
      readFileSync(goldenFile, 'utf8'),
    );
  });
});
