import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createControlChannelCertificates } from '@sekisho/devstack/control-channel-certs';
import { resolveEnvoyBinary, validateEnvoyConfig } from '@sekisho/devstack/envoy';
import { freePort, type ManagedProcess, spawnProcess, waitForHttp } from '@sekisho/devstack/processes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from './config';
import { sidecarParts } from './sidecar';
import { decide } from './workload';

// The injected container run as the kubelet would run it, with the real Envoy binary:
// `$(POD_NAME)` and `$(POD_NAMESPACE)` expanded, the same command and arguments. Envoy reads
// the control channel files at start (and while validating): a CA of the run issues them into
// the directory the CSI volume would be mounted at (INJECTOR_PROXY_XDS_TLS_DIR), and the pod's
// SDS annotation is written where its downwardAPI volume would put it (INJECTOR_PROXY_XDS_SDS_DIR).

let tlsDir = '';
let caPem = '';

const pod = {
  metadata: { labels: { 'app.kubernetes.io/name': 'customer' } },
  spec: { serviceAccountName: 'customer', containers: [{ name: 'app', ports: [{ containerPort: 3001 }] }] },
};

async function injectedProxy(env: Record<string, string>) {
  const config = configSchema.parse({
    INJECTOR_TLS_CERT_FILE: 'x',
    INJECTOR_TLS_KEY_FILE: 'y',
    INJECTOR_PROXY_XDS_TLS_DIR: join(tlsDir, 'xds-tls'),
    INJECTOR_PROXY_XDS_SDS_DIR: join(tlsDir, 'xds-sds'),
    INJECTOR_XDS_CA_FILE: 'read by the server, given here as caPem',
    ...env,
  });
  const decision = decide(
    {
      uid: 'u',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      operation: 'CREATE',
      object: pod,
    },
    config,
  );
  if (decision.kind !== 'inject') throw new Error(`not injected: ${JSON.stringify(decision)}`);
  const parts = sidecarParts(decision.workload, config, { caPem });
  await writeFile(
    join(tlsDir, 'xds-sds', 'xds-client-sds.json'),
    parts.annotations['sekisho.io/xds-client-sds'] as string,
  );
  const proxy = parts.initContainers[0] as { command: string[]; args: string[] };
  const expand = (arg: string) =>
    arg.replaceAll('$(POD_NAME)', 'customer-7d9f-abcde').replaceAll('$(POD_NAMESPACE)', 'shop');
  return { command: proxy.command, args: proxy.args.map(expand) };
}

describe('the sidecar bootstrap', () => {
  let envoy: ManagedProcess | undefined;
  afterAll(async () => {
    await envoy?.stop();
    if (tlsDir) await rm(tlsDir, { recursive: true, force: true });
  });

  let envoyPath: string;
  beforeAll(async () => {
    const runtime = await resolveEnvoyBinary();
    if (runtime.kind !== 'binary')
      throw new Error('these tests need an Envoy binary: run `npm run setup` (ENVOY_BIN, PATH or the pip cache)');
    envoyPath = runtime.path;
    tlsDir = await mkdtemp(join(tmpdir(), 'sekisho-sidecar-xds-'));
    const certs = await createControlChannelCertificates(join(tlsDir, 'issued'), { clients: [] });
    const sidecar = await certs.issueClient('sidecar-customer', ['spiffe://cluster.local/ns/shop/sa/customer']);
    caPem = await readFile(certs.caFile, 'utf8');
    await mkdir(join(tlsDir, 'xds-tls'));
    await mkdir(join(tlsDir, 'xds-sds'));
    await copyFile(sidecar.certFile, join(tlsDir, 'xds-tls', 'tls.crt'));
    await copyFile(sidecar.keyFile, join(tlsDir, 'xds-tls', 'tls.key'));
  });

  it('passes envoy --mode validate', async () => {
    const { args } = await injectedProxy({});
    const result = await validateEnvoyConfig(args[args.indexOf('--config-yaml') + 1] as string);
    expect(result.output).not.toMatch(/error/i);
    expect(result.ok).toBe(true);
  });

  it('answers /healthz/live and /healthz/ready once initialised, and nothing else of the admin', async () => {
    const health = await freePort();
    const admin = await freePort();
    const xds = await freePort();
    const { args } = await injectedProxy({
      INJECTOR_HEALTH_PORT: String(health),
      INJECTOR_PROXY_ADMIN_PORT: String(admin),
      INJECTOR_XDS_ADDRESS: `127.0.0.1:${xds}`,
      // No control plane answers: Envoy initialises once both initial fetches time out.
      INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT: '1s',
    });
    envoy = spawnProcess({ name: 'sidecar-envoy', command: envoyPath, args, reportUnexpectedExit: true });
    const live = await envoy.waitForHttp(`http://127.0.0.1:${health}/healthz/live`, 30_000);
    expect(live.body).toBe('live\n');
    const ready = await waitForHttp(`http://127.0.0.1:${health}/healthz/ready`, 30_000);
    expect(ready.body).toBe('LIVE\n');
    const stats = await fetch(`http://127.0.0.1:${health}/stats/prometheus`);
    expect(await stats.text()).toMatch(/^# TYPE envoy_/m);
    // Nothing else of the admin endpoint is reachable through the health listener.
    const other = await fetch(`http://127.0.0.1:${health}/config_dump`);
    expect(other.status).toBe(404);
  });
});
