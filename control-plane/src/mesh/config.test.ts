import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@sekisho/service-kit/config';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadControlPlaneConfig } from '../main';
import { captureLogger } from '../xds/test-helpers';
import { createMeshCaFromConfig } from './config';
import { spiffeIdOf } from './contract';
import { createTestCa, type TestCa } from './test-ca';

const problemsOf = (env: Record<string, string>): Array<{ variable: string; message: string }> => {
  try {
    loadControlPlaneConfig({ CONTROL_PLANE_DEFINITION: 'gateway.yaml', ...env });
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
};

describe('the mesh CA configuration', () => {
  let dir: string;
  let ca: TestCa;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mesh-ca-config-'));
    ca = createTestCa(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    [
      'one file of three',
      { CONTROL_PLANE_MESH_CA_CERT_FILE: 'ca.crt' },
      ['CONTROL_PLANE_MESH_CA_KEY_FILE', 'CONTROL_PLANE_MESH_CA_BUNDLE_FILE'],
      'required with CONTROL_PLANE_MESH_CA_CERT_FILE',
    ],
    [
      'files and a directory',
      { CONTROL_PLANE_MESH_CA_CERT_FILE: 'ca.crt', CONTROL_PLANE_MESH_CA_DIR: '/etc/mesh-ca' },
      ['CONTROL_PLANE_MESH_CA_DIR'],
      'not both',
    ],
    ['a TTL under 5 minutes', { CONTROL_PLANE_MESH_CERT_TTL: '1m' }, ['CONTROL_PLANE_MESH_CERT_TTL'], '5m to 7d'],
    [
      'a renewal point of 1.5',
      { CONTROL_PLANE_MESH_CERT_RENEW_AT: '1.5' },
      ['CONTROL_PLANE_MESH_CERT_RENEW_AT'],
      '0.1 to 0.9',
    ],
    [
      'a trust domain with a slash',
      { CONTROL_PLANE_MESH_TRUST_DOMAIN: 'a/b' },
      ['CONTROL_PLANE_MESH_TRUST_DOMAIN'],
      'DNS name',
    ],
  ])('refuses %s, naming the variable', (_name, env, variables, message) => {
    const problems = problemsOf(env);
    expect(problems.map((p) => p.variable)).toEqual(variables);
    for (const problem of problems) expect(problem.message).toContain(message);
  });

  it('checks the CA files at load time: a wrong key names the directory and the file', () => {
    const broken = join(dir, 'broken');
    const other = createTestCa(join(dir, 'other'), { name: 'other' });
    createTestCa(broken, { name: 'b' });
    writeFileSync(join(broken, 'b-secret', 'tls.key'), readFileSync(other.key));
    const problems = problemsOf({ CONTROL_PLANE_MESH_CA_DIR: join(broken, 'b-secret') });
    expect(problems).toEqual([
      {
        variable: 'CONTROL_PLANE_MESH_CA_DIR (tls.key)',
        message: expect.stringContaining('is not the private key of'),
      },
    ]);
  });

  it('builds no mesh CA without one configured, and one with the configured TTL otherwise', () => {
    const deps = { logger: captureLogger().logger, registry: new Registry(), pollIntervalMs: 0 };
    expect(
      createMeshCaFromConfig(loadControlPlaneConfig({ CONTROL_PLANE_DEFINITION: 'g.yaml' }), deps),
    ).toBeUndefined();
    const config = loadControlPlaneConfig({
      CONTROL_PLANE_DEFINITION: 'g.yaml',
      CONTROL_PLANE_MESH_CA_DIR: ca.secretDir,
      CONTROL_PLANE_MESH_TRUST_DOMAIN: 'salon.example',
      CONTROL_PLANE_MESH_CERT_TTL: '2h',
    });
    const mesh = createMeshCaFromConfig(config, deps);
    const id = spiffeIdOf('salon.example', 'salon', 'customer');
    expect(mesh?.secretsFor(id)).toHaveLength(2);
    const issued = mesh?.current(id);
    expect((issued?.notAfter.getTime() ?? 0) - Date.now()).toBeGreaterThan(119 * 60_000);
    expect(() => mesh?.secretsFor(spiffeIdOf('cluster.local', 'salon', 'customer'))).toThrow('salon.example only');
    mesh?.close();
  });
});
