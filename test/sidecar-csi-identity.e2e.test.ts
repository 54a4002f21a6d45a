import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createControlChannelCertificates } from '@sekisho/devstack/control-channel-certs';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { freePort, type ManagedProcess, spawnProcess, waitUntil } from '@sekisho/devstack/processes';
import { configSchema } from '@sekisho/injector/config';
import { handleReview } from '@sekisho/injector/review';
import { readXdsCa } from '@sekisho/injector/xds-ca';
import jsonpatch from 'fast-json-patch';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshPki, type IssuedFiles, type MeshPki } from './mesh-pki';
import { startControlPlaneOverMtls, writeDefinitionFile } from './support';

// The default control channel identity of an injected sidecar, run for real: a pod's
// AdmissionReview through the injector's handleReview (csi mode), the patch applied, the proxy
// container started as the kubelet starts it (same command and arguments, $(POD_NAME) and
// $(POD_NAMESPACE) expanded) with the real Envoy, against the control plane process
// (`tsx control-plane/src/main.ts`) with mutual TLS on ADS and the run's mesh CA
// (CONTROL_PLANE_MESH_CA_*).
//
// The pod's volumes are laid out as the node has them:
// - the CSI volume as cert-manager's csi-driver-spiffe writes it (csi-lib's storage, Kubernetes'
//   atomic writer): tls.crt (the leaf, then the issuer's intermediate, as cert-manager's CA
//   issuer chains it), tls.key, ca.crt (the mesh root) in a timestamped directory, `..data`
//   pointing at it, each file a symlink through `..data`, mode 0440; the leaf's only URI SAN is
//   spiffe://cluster.local/ns/<namespace>/sa/<service account>, signed by an intermediate under
//   the run's mesh root (the ClusterIssuer of k8s/base/control-plane/mesh-identity.yaml);
// - the downwardAPI volume with the pod's annotation sekisho.io/xds-client-sds as a file.
// A renewal is written the driver's way (a new directory, `..data` swapped by a rename).

// biome-ignore lint/suspicious/noExplicitAny: JSON of the control plane's /status and Envoy's admin, read field by field.
type Json = Record<string, any>;

const processes: ManagedProcess[] = [];
let dir = '';
let pki: MeshPki;
let issuer: ReturnType<MeshPki['intermediate']>;
let caPem = '';
let xdsPort = 0;
let cpAdminPort = 0;
let controlPlane: ManagedProcess;
let definitionFile = '';
// biome-ignore lint/suspicious/noExplicitAny: the definition written to the file, changed by a test.
let definition: any;
/** The first test's sidecar, still running for the last test. */
let customerSidecar: Sidecar | undefined;
const ports = { customerIn: 0, customerOut: 0, customerApp: 0, appointmentIn: 0, appointmentOut: 0 };

/** Writes `files` into `volume` as Kubernetes' atomic writer does (csi-lib's storage, the kubelet). */
async function writeAtomically(volume: string, generation: number, files: Record<string, string>) {
  const data = join(volume, `..2026_12_02_00_00_0${generation}.${1000 + generation}`);
  await mkdir(data, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    await writeFile(join(data, name), content);
    await chmod(join(data, name), 0o440);
  }
  await symlink(data.slice(volume.length + 1), join(volume, '..data_tmp'));
  await rename(join(volume, '..data_tmp'), join(volume, '..data'));
  if (generation === 1) for (const name of Object.keys(files)) await symlink(join('..data', name), join(volume, name));
}

/** The CSI volume's files for a certificate cert-manager issued. */
const csiFiles = (issued: IssuedFiles) => ({
  'tls.crt': issued.certificatePem,
  'tls.key': issued.privateKeyPem,
  'ca.crt': pki.caPem,
});

const serialOf = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase();

interface Sidecar {
  envoy: ManagedProcess;
  tlsDir: string;
  healthPort: number;
  adminPort: number;
}

/**
 * Injects a pod of `service` (service account `serviceAccount`) in `namespace`, lays out its
 * volumes with `certificate` in the CSI volume, and starts its proxy container.
 */
async function startSidecar(
  name: string,
  pod: { service: string; serviceAccount: string; namespace: string; inbound?: number; outbound?: number },
  certificate: IssuedFiles,
): Promise<Sidecar> {
  const [healthPort, adminPort] = await Promise.all([freePort(), freePort()]);
  const podDir = join(dir, name);
  const config = configSchema.parse({
    INJECTOR_TLS_CERT_FILE: 'unused.crt',
    INJECTOR_TLS_KEY_FILE: 'unused.key',
    INJECTOR_XDS_CA_FILE: join(dir, 'channel', 'ca.crt'),
    INJECTOR_XDS_ADDRESS: `127.0.0.1:${xdsPort}`,
    INJECTOR_PROXY_XDS_TLS_DIR: join(podDir, 'xds-tls'),
    INJECTOR_PROXY_XDS_SDS_DIR: join(podDir, 'xds-sds'),
    INJECTOR_HEALTH_PORT: String(healthPort),
    INJECTOR_PROXY_ADMIN_PORT: String(adminPort),
    INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT: '5s',
  });
  expect(config.INJECTOR_XDS_IDENTITY).toBe('csi');
  const object = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: `${pod.service}-7d9f-`,
      labels: { 'app.kubernetes.io/name': pod.service },
      annotations: {
        ...(pod.inbound ? { 'sekisho.io/inbound-port': String(pod.inbound) } : {}),
        ...(pod.outbound ? { 'sekisho.io/outbound-port': String(pod.outbound) } : {}),
      },
    },
    spec: {
      serviceAccountName: pod.serviceAccount,
      containers: [{ name: 'app', image: 'a', ports: [{ containerPort: ports.customerApp }] }],
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
        namespace: pod.namespace,
        operation: 'CREATE',
        object,
      },
    }),
    config,
    { caPem },
  );
  const response = (result.body as { response: { allowed: boolean; patch: string } }).response;
  expect(response.allowed).toBe(true);
  const patched = jsonpatch.applyPatch(
    structuredClone(object) as Json,
    JSON.parse(Buffer.from(response.patch, 'base64').toString()),
  ).newDocument as Json;
  const volumes = patched.spec.volumes as Json[];
  expect(volumes.find((v) => v.name === 'sekisho-proxy-xds-tls')?.csi).toMatchObject({
    driver: 'spiffe.csi.cert-manager.io',
    readOnly: true,
  });
  // The two volumes, as the CSI driver and the kubelet write them.
  const tlsDir = join(podDir, 'xds-tls');
  await writeAtomically(tlsDir, 1, csiFiles(certificate));
  await writeAtomically(join(podDir, 'xds-sds'), 1, {
    'xds-client-sds.json': patched.metadata.annotations['sekisho.io/xds-client-sds'],
  });
  const proxy = (patched.spec.initContainers as Json[]).find((c) => c.name === 'sekisho-proxy') as {
    command: string[];
    args: string[];
  };
  expect(proxy.command).toEqual(['/usr/local/bin/envoy']);
  const expand = (arg: string) =>
    arg.replaceAll('$(POD_NAME)', `${pod.service}-7d9f-abcde`).replaceAll('$(POD_NAMESPACE)', pod.namespace);
  const envoyBinary = await resolveEnvoyBinary();
  if (envoyBinary.kind !== 'binary') throw new Error('this test needs an Envoy binary: run `npm run setup`');
  const envoy = spawnProcess({ name: `sidecar-${name}`, command: envoyBinary.path, args: proxy.args.map(expand) });
  processes.push(envoy);
  return { envoy, tlsDir, healthPort, adminPort };
}

const statusOf = async () => (await (await fetch(`http://127.0.0.1:${cpAdminPort}/status`)).json()) as Json;

async function stat(sidecar: Sidecar, name: string): Promise<number> {
  const text = await (
    await fetch(`http://127.0.0.1:${sidecar.adminPort}/stats?filter=^${name.replaceAll('.', '\\.')}$`)
  ).text();
  return Number(new RegExp(`${name.replaceAll('.', '\\.')}: (\\d+)`).exec(text)?.[1] ?? 0);
}

/** Serial numbers of the certificates Envoy holds now (its admin /certs). */
async function serials(sidecar: Sidecar): Promise<string[]> {
  const certs = (await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/certs`)).json()) as Json;
  return (certs.certificates ?? []).flatMap((c: Json) =>
    (c.cert_chain ?? []).map((x: Json) => String(x.serial_number).toLowerCase()),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-sidecar-csi-'));
  // The control channel: its CA signs the control plane's server certificate (the sidecars'
  // trust anchor, INJECTOR_XDS_CA_FILE) and the legacy client identities.
  const channel = await createControlChannelCertificates(join(dir, 'channel'), { clients: [] });
  await writeFile(join(dir, 'channel', 'ca.crt'), await readFile(channel.caFile, 'utf8'));
  caPem = readXdsCa(join(dir, 'channel', 'ca.crt'));
  // The mesh: a root (the control plane's mesh CA and bundle) and the intermediate the
  // csi-driver-spiffe ClusterIssuer signs with.
  pki = createMeshPki(join(dir, 'mesh'), 'mesh-root');
  issuer = pki.intermediate('csi-driver-spiffe-issuer');

  [xdsPort, cpAdminPort] = await Promise.all([freePort(), freePort()]);
  for (const key of Object.keys(ports) as Array<keyof typeof ports>) ports[key] = await freePort();
  definitionFile = join(dir, 'gateway.yaml');
  definition = {
    listeners: { http: { address: '127.0.0.1', port: await freePort() } },
    identity: {
      firebase: { projectId: 'demo-salon' },
      groupClaim: 'tier',
      groups: { basic_customer: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${await freePort()}`, healthCheck: false },
      rateLimit: { address: `127.0.0.1:${await freePort()}`, healthCheck: false },
    },
    services: {
      customer: { endpoints: [`127.0.0.1:${ports.customerApp}`] },
      appointment: { endpoints: [`127.0.0.1:${await freePort()}`] },
    },
    routes: [{ match: 'GET /api/v1/customer/*', to: 'customer', rewrite: '/', require: ['read:own_profile'] }],
    mesh: {
      trustDomain: 'cluster.local',
      ingress: { namespace: 'sekisho-system', serviceAccount: 'ingress' },
      services: {
        customer: {
          namespace: 'shop',
          serviceAccount: 'customer',
          appPort: ports.customerApp,
          inboundPort: ports.customerIn,
          outboundPort: ports.customerOut,
          address: `127.0.0.1:${ports.customerIn}`,
          allow: [{ from: ['ingress'] }],
        },
        appointment: {
          namespace: 'shop',
          serviceAccount: 'appointment',
          appPort: await freePort(),
          inboundPort: ports.appointmentIn,
          outboundPort: ports.appointmentOut,
          address: `127.0.0.1:${ports.appointmentIn}`,
          allow: [{ from: ['customer'] }],
        },
      },
    },
  };
  await writeDefinitionFile(definitionFile, definition);
  controlPlane = await startControlPlaneOverMtls({
    definitionFile,
    xdsPort,
    adminPort: cpAdminPort,
    tls: {
      certFile: channel.controlPlane.certFile,
      keyFile: channel.controlPlane.keyFile,
      clientCaFile: channel.caFile,
      trustDomain: channel.trustDomain,
    },
    env: {
      CONTROL_PLANE_MESH_CA_CERT_FILE: pki.caFile,
      CONTROL_PLANE_MESH_CA_KEY_FILE: pki.caKeyFile,
      CONTROL_PLANE_MESH_CA_BUNDLE_FILE: pki.caFile,
      CONTROL_PLANE_MESH_TRUST_DOMAIN: 'cluster.local',
    },
  });
  processes.push(controlPlane);
}, 120_000);

afterAll(async () => {
  for (const p of processes.reverse()) await p.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('an injected sidecar with its csi-driver-spiffe certificate', () => {
  it("is served its service's sidecar view, and loads the driver's renewal with no restart", async () => {
    const first = issuer.issue('customer-1', 'spiffe://cluster.local/ns/shop/sa/customer');
    const sidecar = await startSidecar(
      'customer',
      {
        service: 'customer',
        serviceAccount: 'customer',
        namespace: 'shop',
        inbound: ports.customerIn,
        outbound: ports.customerOut,
      },
      first,
    );
    customerSidecar = sidecar;
    const ready = await sidecar.envoy.waitForHttp(`http://127.0.0.1:${sidecar.healthPort}/healthz/ready`, 60_000);
    expect(ready.body).toBe('LIVE\n');
    // Listed by the control plane in its view, every type ACKed.
    const node = await waitUntil('the control plane to serve the sidecar its view', 30_000, {}, async () => {
      const found = (await statusOf()).nodes.find((n: Json) => n.nodeId === 'customer-7d9f-abcde.shop');
      const acked = ['Listener', 'Cluster'].every((type) =>
        Object.entries(found?.types ?? {}).some(
          ([url, t]) => url.endsWith(type) && (t as Json).ackedVersion !== undefined,
        ),
      );
      return found && acked ? { done: true, value: found } : { done: false, detail: JSON.stringify(found) };
    });
    expect(node).toMatchObject({ nodeCluster: 'sidecar:customer', known: true, view: 'sidecar:customer' });
    // The sidecar view's listeners and clusters arrived.
    const dump = JSON.stringify(
      await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/config_dump?resource=dynamic_listeners`)).json(),
    );
    expect(dump).toContain('"name":"sidecar_inbound"');
    expect(dump).toContain('"name":"sidecar_outbound"');
    const clusters = await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/clusters`)).text();
    expect(clusters).toContain('sidecar_app::');
    expect(await stat(sidecar, 'cluster.sekisho_xds.ssl.handshake')).toBeGreaterThanOrEqual(1);
    expect(await serials(sidecar)).toContain(serialOf(first.certificatePem));

    // The driver renews: a new key and certificate, a new directory, ..data swapped.
    const renewed = issuer.issue('customer-2', 'spiffe://cluster.local/ns/shop/sa/customer');
    await writeAtomically(sidecar.tlsDir, 2, csiFiles(renewed));
    const after = await waitUntil('Envoy to load the renewed certificate', 30_000, {}, async () => {
      const now = await serials(sidecar);
      return now.includes(serialOf(renewed.certificatePem))
        ? { done: true, value: now }
        : { done: false, detail: now.join(',') };
    });
    expect(after).not.toContain(serialOf(first.certificatePem));
    expect(sidecar.envoy.exitInfo()).toBeUndefined();
    // Still served: the stream (and its view) survived the reload.
    const still = (await statusOf()).nodes.find((n: Json) => n.nodeId === 'customer-7d9f-abcde.shop');
    expect(still).toMatchObject({ view: 'sidecar:customer', known: true });
  });

  it('refuses the certificate of another service account the customer view, with the reason', async () => {
    const other = issuer.issue('appointment-as-customer', 'spiffe://cluster.local/ns/shop/sa/appointment');
    const sidecar = await startSidecar(
      'impostor',
      { service: 'customer', serviceAccount: 'appointment', namespace: 'shop' },
      other,
    );
    await waitUntil('the control plane to refuse the impostor', 30_000, {}, async () => {
      const logs = controlPlane.logs();
      return logs.includes('xds_node_refused') &&
        logs.includes(
          'certificate spiffe://cluster.local/ns/shop/sa/appointment is not the workload of sidecar:customer (spiffe://cluster.local/ns/shop/sa/customer)',
        )
        ? { done: true, value: true }
        : { done: false, detail: logs.slice(-400) };
    });
    // It got past the handshake (the mesh CA signed it), but was served nothing.
    expect(await stat(sidecar, 'cluster.sekisho_xds.ssl.handshake')).toBeGreaterThanOrEqual(1);
    const dump = JSON.stringify(
      await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/config_dump?resource=dynamic_listeners`)).json(),
    );
    expect(dump).not.toContain('sidecar_inbound');
    await sidecar.envoy.stop();
  });

  it('refuses a certificate of another CA in the handshake', async () => {
    const rogue = createMeshPki(join(dir, 'rogue'), 'rogue-root').intermediate('rogue-issuer');
    const sidecar = await startSidecar(
      'rogue',
      { service: 'customer', serviceAccount: 'customer', namespace: 'shop' },
      rogue.issue('rogue-customer', 'spiffe://cluster.local/ns/shop/sa/customer'),
    );
    await waitUntil('the rogue sidecar to fail 3 connections', 30_000, {}, async () => {
      const failed = await stat(sidecar, 'cluster.sekisho_xds.upstream_cx_connect_fail');
      return failed >= 3 ? { done: true, value: failed } : { done: false, detail: String(failed) };
    });
    expect(await stat(sidecar, 'cluster.sekisho_xds.ssl.handshake')).toBe(0);
    const nodes = (await statusOf()).nodes.filter((n: Json) => n.nodeId === 'customer-7d9f-abcde.shop');
    // Only the first test's sidecar, never this one: it never reached the gRPC layer.
    expect(nodes).toHaveLength(1);
    await sidecar.envoy.stop();
  });

  it('ends the stream when a new definition gives the view another service account, before sending its key', async () => {
    const sidecar = customerSidecar as Sidecar;
    const moved = structuredClone(definition);
    moved.mesh.services.customer.serviceAccount = 'customer-v2';
    await writeDefinitionFile(definitionFile, moved);
    await waitUntil('the control plane to end the stream', 30_000, {}, async () => {
      const logs = controlPlane.logs();
      return logs.includes(
        'sidecar:customer now serves spiffe://cluster.local/ns/shop/sa/customer-v2, not spiffe://cluster.local/ns/shop/sa/customer',
      )
        ? { done: true, value: true }
        : { done: false, detail: logs.slice(-400) };
    });
    // Its reconnects are refused at stream start; the new workload's certificate never reached it.
    await waitUntil('the reconnect to be refused too', 30_000, {}, async () => {
      const logs = controlPlane.logs();
      return logs.includes(
        'certificate spiffe://cluster.local/ns/shop/sa/customer is not the workload of sidecar:customer (spiffe://cluster.local/ns/shop/sa/customer-v2)',
      )
        ? { done: true, value: true }
        : { done: false, detail: logs.slice(-400) };
    });
    const certs = JSON.stringify(await (await fetch(`http://127.0.0.1:${sidecar.adminPort}/certs`)).json());
    expect(certs).toContain('spiffe://cluster.local/ns/shop/sa/customer');
    expect(certs).not.toContain('sa/customer-v2');
  });
});
