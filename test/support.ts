// What every end-to-end file needs around the stack: its processes' output under a failing
// test, and definition files written the way editors and config tools write them.

import { randomUUID } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { repoRoot } from '@sekisho/devstack/paths';
import { type ManagedProcess, spawnProcess } from '@sekisho/devstack/processes';
import type { Stack } from '@sekisho/devstack/stack';
import { onTestFailed } from 'vitest';
import { stringify } from 'yaml';

/**
 * Prints every process's recent output (the last `lines` lines of each, all that is kept
 * when omitted) if the running test fails. `stack` is read at failure time.
 */
export function showStackLogsOnFailure(stack: () => Pick<Stack, 'logs'> | undefined, lines?: number): void {
  onTestFailed(() => {
    console.error(stack()?.logs(lines));
  });
}

/** Write then rename, so a watcher never reads half a file. */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  const temporary = join(dirname(file), `.${randomUUID()}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

/** A gateway definition as YAML, written atomically. */
export async function writeDefinitionFile(file: string, definition: unknown): Promise<void> {
  await writeFileAtomically(file, stringify(definition));
}

/** The one-route definition the mesh tests serve: an HTTP listener on `listenerPort`, one service. */
export function oneRouteDefinitionYaml(listenerPort: number): string {
  return [
    'listeners:',
    `  http: { address: 127.0.0.1, port: ${listenerPort} }`,
    'identity:',
    '  firebase: { projectId: demo-salon }',
    '  groupClaim: tier',
    '  groups: { basic_customer: [read:own_profile] }',
    'policyServices:',
    '  extAuthz: { address: 127.0.0.1:19001 }',
    '  rateLimit: { address: 127.0.0.1:19002 }',
    'services:',
    '  customer: { endpoints: [127.0.0.1:3001] }',
    'routes:',
    '  - { match: GET /api/v1/customer/profile, to: customer, require: [read:own_profile] }',
    '',
  ].join('\n');
}

/**
 * The control plane as its image runs it, serving ADS over mutual TLS on `xdsPort`; resolves
 * once its `/readyz` answers on `adminPort`.
 */
export async function startControlPlaneOverMtls(opts: {
  definitionFile: string;
  xdsPort: number;
  adminPort: number;
  tls: { certFile: string; keyFile: string; clientCaFile: string; trustDomain: string };
  /** More of its environment (a mesh CA's CONTROL_PLANE_MESH_CA_*, say). */
  env?: Record<string, string>;
}): Promise<ManagedProcess> {
  const controlPlane = spawnProcess({
    name: 'control-plane',
    command: join(repoRoot, 'node_modules', '.bin', 'tsx'),
    args: [join(repoRoot, 'control-plane', 'src', 'main.ts')],
    env: {
      ...process.env,
      CONTROL_PLANE_DEFINITION: opts.definitionFile,
      CONTROL_PLANE_XDS_PORT: String(opts.xdsPort),
      CONTROL_PLANE_ADMIN_PORT: String(opts.adminPort),
      CONTROL_PLANE_TLS_CERT_FILE: opts.tls.certFile,
      CONTROL_PLANE_TLS_KEY_FILE: opts.tls.keyFile,
      CONTROL_PLANE_TLS_CLIENT_CA_FILE: opts.tls.clientCaFile,
      CONTROL_PLANE_TLS_TRUST_DOMAIN: opts.tls.trustDomain,
      LOG_LEVEL: 'warn',
      ...opts.env,
    },
  });
  try {
    await controlPlane.waitForHttp(`http://127.0.0.1:${opts.adminPort}/readyz`, 60_000);
  } catch (error) {
    await controlPlane.stop();
    throw error;
  }
  return controlPlane;
}
