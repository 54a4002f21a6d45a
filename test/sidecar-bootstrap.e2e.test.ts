import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createControlChannelCertificates } from '@sekisho/devstack/control-channel-certs';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { freePort, type ManagedProcess, spawnProcess, waitUntil } from '@sekisho/devstack/processes';
import { configSchema } from '@sekisho/injector/config';
import { handleReview } from '@sekisho/injector/review';
import jsonpatch from 'fast-json-patch';
import { afterAll, describe, expect, it } from 'vitest';
import { oneRouteDefinitionYaml, startControlPlaneOverMtls } from './support';

// The injector's output run for real: a pod's AdmissionReview through handleReview, the patch
// applied, the sidecar container started as the kubelet would start it (same command and
// arguments, $(POD_NAME)/$(POD_NAMESPACE) expanded) with the real Envoy, against the control
// plane started as its image starts it (`tsx control-plane/src/main.ts`) with mutual TLS on its
// ADS port. This is the Secret mode (INJECTOR_XDS_IDENTITY=secret; the default csi mode is
// test/sidecar-csi-identity.e2e.test.ts). The sidecar's certificate
// (spiffe://sekisho.local/sidecar/customer, issued by a CA of the run) sits where the injector
// mounts the Secret sekisho-xds-<service>, the pod's SDS annotation where its downwardAPI volume
// puts it; the control plane
// serves the view the injector's bootstrap claims (sidecar:customer) to that certificate only:
// the same bootstrap with another service's certificate is refused.

type Json = Record<string, unknown>;
interface Status {
  nodes: Array<{
    nodeId?: string;
    nodeCluster?: string;
    known?: boolean;
    types: Record<string, { ackedVersion?: string }>;
  }>;
}
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
    const [xdsPort, adminPort, listenerPort, healthPort, proxyAdminPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    dir = await mkdtemp(join(tmpdir(), 'sekisho-sidecar-'));
    await writeFile(join(dir, 'gateway.yaml'), oneRouteDefinitionYaml(listenerPort));
    const certs = await createControlChannelCertificates(join(dir, 'channel'), { clients: [] });
    // What the kubelet mounts for a Secret: ca.crt, tls.crt, tls.key in one directory.
    const secretDir = async (name: string, uri: string) => {
      const issued = await certs.issueClient(name, [uri]);
      const at = join(dir as string, name);
      await mkdir(at);
      await copyFile(certs.caFile, join(at, 'ca.crt'));
      await copyFile(issued.certFile, join(at, 'tls.crt'));
      await copyFile(issued.keyFile, join(at, 'tls.key'));
      return at;
    };
    const customerTls = await secretDir('sekisho-xds-customer', 'spiffe://sekisho.local/sidecar/customer');
    const otherTls = await secretDir('sekisho-xds-appointment', 'spiffe://sekisho.local/sidecar/appointment');
    const controlPlane = await startControlPlaneOverMtls({
      definitionFile: join(dir, 'gateway.yaml'),
      xdsPort,
      adminPort,
      tls: {
        certFile: certs.controlPlane.certFile,
        keyFile: certs.controlPlane.keyFile,
        clientCaFile: certs.caFile,
        trustDomain: 'sekisho.local',
      },
    });
    processes.push(controlPlane);

    const injectorConfig = (tlsDir: string) =>
      configSchema.parse({
        INJECTOR_TLS_CERT_FILE: 'unused.crt',
        INJECTOR_TLS_KEY_FILE: 'unused.key',
        INJECTOR_XDS_ADDRESS: `127.0.0.1:${xdsPort}`,
        INJECTOR_XDS_IDENTITY: 'secret',
        INJECTOR_PROXY_XDS_TLS_DIR: tlsDir,
        INJECTOR_PROXY_XDS_SDS_DIR: join(tlsDir, '..', `${basename(tlsDir)}-sds`),
        INJECTOR_HEALTH_PORT: String(healthPort),
        INJECTOR_PROXY_ADMIN_PORT: String(proxyAdminPort),
        INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT: '5s',
      });
    const config = injectorConfig(customerTls);
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { generateName: 'customer-7d9f-', labels: { 'app.kubernetes.io/name': 'customer' } },
      spec: {
        serviceAccountName: 'customer',
        containers: [{ name: 'app', image: 'a', ports: [{ containerPort: 3001 }] }],
      },
    };
    const reviewOf = (object: Json) =>
      JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: 'u',
          kind: { group: '', version: 'v1', kind: 'Pod' },
          resource: { group: '', version: 'v1', resource: 'pods' },
          namespace: 'shop',
          operation: 'CREATE',
          object,
        },
      });
    const proxyOf = async (result: ReturnType<typeof handleReview>, sdsDir: string) => {
      const response = result.body as { response: { patch: string } };
      const patched = jsonpatch.applyPatch(
        structuredClone(pod) as Json,
        JSON.parse(Buffer.from(response.response.patch, 'base64').toString()),
      ).newDocument as unknown as {
        metadata: { annotations: Record<string, string> };
        spec: { initContainers: Json[] };
      };
      // What the downwardAPI volume projects: the pod's SDS annotation as a file.
      await mkdir(sdsDir, { recursive: true });
      await writeFile(
        join(sdsDir, 'xds-client-sds.json'),
        patched.metadata.annotations['sekisho.io/xds-client-sds'] ?? '',
      );
      return patched.spec.initContainers[0] as { command: string[]; args: string[] };
    };
    const proxy = await proxyOf(handleReview(reviewOf(pod), config), config.INJECTOR_PROXY_XDS_SDS_DIR);
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
    // Authenticated and authorized (over TLS: the handshake is counted on the xds cluster), and
    // listed with the identity from the bootstrap. Served nothing yet: the control plane has no
    // sidecar view (the mesh issue adds `sidecar:<service>` views), so the node is reported as
    // of no view rather than handed the ingress's configuration.
    const statusOf = async () => (await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json()) as Status;
    const node = await waitUntil('the control plane to list the sidecar', 30_000, {}, async () => {
      const found = (await statusOf()).nodes.find((n) => n.nodeId === 'customer-7d9f-abcde.shop');
      return found ? { done: true, value: found } : { done: false, detail: 'not connected' };
    });
    expect(node.known).toBe(false);
    expect(Object.values(node.types ?? {}).every((t) => t.ackedVersion === undefined)).toBe(true);
    expect(node.nodeCluster).toBe('sidecar:customer');
    const stats = await (
      await fetch(`http://127.0.0.1:${proxyAdminPort}/stats?filter=^cluster\\.sekisho_xds\\.ssl\\.handshake$`)
    ).text();
    expect(Number(/ssl\.handshake: (\d+)/.exec(stats)?.[1])).toBeGreaterThanOrEqual(1);
    await sidecar.stop();

    // The same pod's bootstrap with the certificate of another service: refused at stream start.
    const impostorConfig = injectorConfig(otherTls);
    const impostor = await proxyOf(
      handleReview(reviewOf(pod), impostorConfig),
      impostorConfig.INJECTOR_PROXY_XDS_SDS_DIR,
    );
    const refused = spawnProcess({
      name: 'sidecar-envoy-impostor',
      command: envoy.path,
      args: impostor.args.map(expand),
    });
    processes.push(refused);
    await waitUntil('the control plane to refuse the impostor', 30_000, {}, async () => {
      const logs = controlPlane.logs();
      return logs.includes('xds_node_refused') && logs.includes('spiffe://sekisho.local/sidecar/appointment')
        ? { done: true, value: true }
        : { done: false, detail: logs.slice(-300) };
    });
    expect((await statusOf()).nodes.some((n) => n.nodeCluster === 'sidecar:customer')).toBe(false);
  });
});
