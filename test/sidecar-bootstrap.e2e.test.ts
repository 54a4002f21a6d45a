import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, type ManagedProcess, spawnProcess, waitUntil } from '@sekisho/devstack/processes';
import { configSchema } from '@sekisho/injector/config';
import { handleReview } from '@sekisho/injector/review';
import jsonpatch from 'fast-json-patch';
import { afterAll, describe, expect, it } from 'vitest';

// The injector's output run for real: a pod's AdmissionReview through handleReview, the patch
// applied, the sidecar container started as the kubelet would start it (same command and
// arguments, $(POD_NAME)/$(POD_NAMESPACE) expanded) with the real Envoy, against the control
// plane started as its image starts it (`tsx control-plane/src/main.ts`). The control plane
// sees the workload identity the injector put in the bootstrap; the sidecar becomes ready.

type Json = Record<string, unknown>;
const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx');
const processes: ManagedProcess[] = [];
let dir: string | undefined;

afterAll(async () => {
  for (const p of processes.reverse()) await p.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('an injected sidecar', () => {
  it('connects to the control plane with its workload identity and becomes ready', async () => {
    const envoy = await resolveEnvoyBinary();
    if (envoy.kind !== 'binary') throw new Error('this test needs an Envoy binary: run `npm run setup`');
    const [xdsPort, adminPort, listenerPort, healthPort, proxyAdminPort] = await Promise.all(
      Array.from({ length: 5 }, () => freePort()),
    );
    dir = await mkdtemp(join(tmpdir(), 'sekisho-sidecar-'));
    await writeFile(
      join(dir, 'gateway.yaml'),
      [
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
      ].join('\n'),
    );
    const controlPlane = spawnProcess({
      name: 'control-plane',
      command: tsx,
      args: [join(repoRoot, 'control-plane', 'src', 'main.ts')],
      env: {
        ...process.env,
        CONTROL_PLANE_DEFINITION: join(dir, 'gateway.yaml'),
        CONTROL_PLANE_XDS_PORT: String(xdsPort),
        CONTROL_PLANE_ADMIN_PORT: String(adminPort),
        LOG_LEVEL: 'warn',
      },
    });
    processes.push(controlPlane);
    await controlPlane.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 60_000);

    const config = configSchema.parse({
      INJECTOR_TLS_CERT_FILE: 'unused.crt',
      INJECTOR_TLS_KEY_FILE: 'unused.key',
      INJECTOR_XDS_ADDRESS: `127.0.0.1:${xdsPort}`,
      INJECTOR_HEALTH_PORT: String(healthPort),
      INJECTOR_PROXY_ADMIN_PORT: String(proxyAdminPort),
      INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT: '5s',
    });
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { generateName: 'customer-7d9f-', labels: { 'app.kubernetes.io/name': 'customer' } },
      spec: {
        serviceAccountName: 'customer',
        containers: [{ name: 'app', image: 'a', ports: [{ containerPort: 3001 }] }],
      },
    };
    const result = handleReview(
      JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: 'u',
          kind: { group: '', version: 'v1', kind: 'Pod' },
          resource: { group: '', version: 'v1', resource: 'pods' },
          namespace: 'shop',
          operation: 'CREATE',
          object: pod,
        },
      }),
      config,
    );
    const response = result.body as { response: { patch: string } };
    const patched = jsonpatch.applyPatch(
      structuredClone(pod) as Json,
      JSON.parse(Buffer.from(response.response.patch, 'base64').toString()),
    ).newDocument as unknown as { spec: { initContainers: Json[] } };
    const proxy = patched.spec.initContainers[0] as { command: string[]; args: string[] };
    const expand = (arg: string) =>
      arg.replaceAll('$(POD_NAME)', 'customer-7d9f-abcde').replaceAll('$(POD_NAMESPACE)', 'shop');
    const sidecar = spawnProcess({
      name: 'sidecar-envoy',
      command: envoy.path,
      args: proxy.args.map(expand),
    });
    processes.push(sidecar);
    expect(proxy.command).toEqual(['/usr/local/bin/envoy']);

    const ready = await sidecar.waitForHttp(`http://127.0.0.1:${healthPort}/healthz/ready`, 60_000);
    expect(ready.body).toBe('LIVE\n');
    // The control plane lists the stream with the identity from the bootstrap.
    const status = await waitUntil('the control plane to list the sidecar', 30_000, {}, async () => {
      const text = await (await fetch(`http://127.0.0.1:${adminPort}/status`)).text();
      return text.includes('customer-7d9f-abcde.shop')
        ? { done: true, value: text }
        : { done: false, detail: text.slice(0, 300) };
    });
    expect(status).toContain('"nodeId":"customer-7d9f-abcde.shop"');
    expect(status).toContain('"nodeCluster":"sidecar~shop~customer"');
  });
});
