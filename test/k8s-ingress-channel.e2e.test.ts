import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createControlChannelCertificates } from '@sekisho/devstack/control-channel-certs';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { freePort, type ManagedProcess, spawnProcess, waitUntil } from '@sekisho/devstack/processes';
import { issueClientCertificate, issueServerCertificate } from '@sekisho/devstack/tls-certs';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import {
  expectedIngressSdsFiles,
  ingressBootstrapFile,
  ingressBootstrapValues,
  ingressSdsDir,
  ingressXdsTlsDir,
} from './k8s-ingress-bootstrap';
import { oneRouteDefinitionYaml, startControlPlaneOverMtls } from './support';

// k8s/base/ingress/bootstrap.yaml and its two SDS files run with the real Envoy against the
// control plane process over mutual TLS, laid out as the pod has them: the SDS files where the
// ConfigMap is mounted, the certificate where the Secret sekisho-ingress-xds is mounted, in the
// kubelet's layout (ca.crt, tls.crt, tls.key → ..data/… → a timestamped directory). Only the
// addresses and ports change (loopback, free ports). A renewal written the way the kubelet
// writes it (a new directory, ..data swapped atomically) is loaded by Envoy with no restart.

// biome-ignore lint/suspicious/noExplicitAny: the bootstrap and Envoy's /certs JSON, read field by field.
type Json = Record<string, any>;
const processes: ManagedProcess[] = [];
let dir: string | undefined;

afterAll(async () => {
  for (const p of processes.reverse()) await p.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Writes `files` as the kubelet writes a Secret volume: a new directory, then ..data swapped. */
async function writeSecretVolume(volume: string, generation: number, files: Record<string, string>) {
  const data = join(volume, `..gen_${generation}`);
  await mkdir(data, { recursive: true });
  for (const [name, content] of Object.entries(files)) await writeFile(join(data, name), content);
  await symlink(`..gen_${generation}`, join(volume, '..data_tmp'));
  await rename(join(volume, '..data_tmp'), join(volume, '..data'));
  if (generation === 1) for (const name of Object.keys(files)) await symlink(join('..data', name), join(volume, name));
}

describe('the ingress bootstrap of k8s/ on its control channel', () => {
  it('is served over mutual TLS and loads a renewed client certificate with no restart', async () => {
    const envoy = await resolveEnvoyBinary();
    if (envoy.kind !== 'binary') throw new Error('this test needs an Envoy binary: run `npm run setup`');
    const [xdsPort, cpAdminPort, listenerPort, envoyAdminPort, statsPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    dir = await mkdtemp(join(tmpdir(), 'sekisho-k8s-ingress-'));
    const certs = await createControlChannelCertificates(join(dir, 'issued'), { clients: [] });
    // The control plane's certificate carries its Service's name, as cert-manager's does.
    const serverName = ingressBootstrapValues.controlPlane.tls.serverName;
    const server = await issueServerCertificate(certs.ca, {
      commonName: serverName,
      dnsNames: [serverName],
      uris: [`spiffe://${certs.trustDomain}/control-plane`],
    });
    await writeFile(join(dir, 'cp.crt'), server.certificatePem);
    await writeFile(join(dir, 'cp.key'), server.privateKeyPem);
    const ingressIdentity = { commonName: 'sekisho-ingress', uris: [`spiffe://${certs.trustDomain}/ingress`] };
    const first = await issueClientCertificate(certs.ca, ingressIdentity);
    const secret = join(dir, 'secret');
    await writeSecretVolume(secret, 1, {
      'ca.crt': certs.ca.certificatePem,
      'tls.crt': first.certificatePem,
      'tls.key': first.privateKeyPem,
    });

    await writeFile(join(dir, 'gateway.yaml'), oneRouteDefinitionYaml(listenerPort));
    const controlPlane = await startControlPlaneOverMtls({
      definitionFile: join(dir, 'gateway.yaml'),
      xdsPort,
      adminPort: cpAdminPort,
      tls: {
        certFile: join(dir, 'cp.crt'),
        keyFile: join(dir, 'cp.key'),
        clientCaFile: certs.caFile,
        trustDomain: certs.trustDomain,
      },
    });
    processes.push(controlPlane);

    // The ConfigMap's files, with the mount paths of this run and loopback ports.
    const configMap = join(dir, 'configmap');
    await mkdir(configMap);
    for (const name of Object.keys(expectedIngressSdsFiles()))
      await writeFile(
        join(configMap, name),
        (await readFile(join(dirname(ingressBootstrapFile), name), 'utf8')).replaceAll(ingressXdsTlsDir, secret),
      );
    const bootstrap = parse(
      (await readFile(ingressBootstrapFile, 'utf8')).replaceAll(`${ingressSdsDir}/`, `${configMap}/`),
    ) as Json;
    bootstrap.admin.address.socket_address.port_value = envoyAdminPort;
    bootstrap.static_resources.listeners[0].address.socket_address = { address: '127.0.0.1', port_value: statsPort };
    for (const cluster of bootstrap.static_resources.clusters) {
      const address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
      if (cluster.name === 'sekisho_xds') Object.assign(address, { address: '127.0.0.1', port_value: xdsPort });
      else address.port_value = envoyAdminPort;
    }
    await writeFile(join(dir, 'bootstrap.yaml'), stringify(bootstrap));
    // The ingress Deployment's arguments.
    const ingress = spawnProcess({
      name: 'ingress-envoy',
      command: envoy.path,
      args: [
        '-c',
        join(dir, 'bootstrap.yaml'),
        '--service-node',
        'sekisho-ingress-5c9d-x2x7q',
        '--disable-hot-restart',
      ],
    });
    processes.push(ingress);

    const node = await waitUntil('the control plane to serve the ingress', 60_000, {}, async () => {
      const status = (await (await fetch(`http://127.0.0.1:${cpAdminPort}/status`)).json()) as Json;
      const found = status.nodes.find((n: Json) => n.nodeId === 'sekisho-ingress-5c9d-x2x7q');
      const acked = Object.values(found?.types ?? {}).some((t) => (t as Json).ackedVersion !== undefined);
      return found && acked ? { done: true, value: found } : { done: false, detail: JSON.stringify(found) };
    });
    expect(node.nodeCluster).toBe('sekisho-ingress');
    const ready = await ingress.waitForHttp(`http://127.0.0.1:${statsPort}/ready`, 30_000);
    expect(ready.body).toBe('LIVE\n');

    // The client certificate Envoy holds, by serial number (Envoy's admin /certs).
    const serials = async () => {
      const certsInUse = (await (await fetch(`http://127.0.0.1:${envoyAdminPort}/certs`)).json()) as Json;
      return (certsInUse.certificates ?? []).flatMap((c: Json) =>
        (c.cert_chain ?? []).map((x: Json) => String(x.serial_number).toLowerCase()),
      ) as string[];
    };
    const serialOf = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase();
    expect(await serials()).toContain(serialOf(first.certificatePem));

    // cert-manager renews, the kubelet swaps ..data: Envoy loads the new pair by itself.
    const renewed = await issueClientCertificate(certs.ca, ingressIdentity);
    await writeSecretVolume(secret, 2, {
      'ca.crt': certs.ca.certificatePem,
      'tls.crt': renewed.certificatePem,
      'tls.key': renewed.privateKeyPem,
    });
    const after = await waitUntil('Envoy to load the renewed certificate', 30_000, {}, async () => {
      const now = await serials();
      return now.includes(serialOf(renewed.certificatePem))
        ? { done: true, value: now }
        : { done: false, detail: now.join(',') };
    });
    expect(after).not.toContain(serialOf(first.certificatePem));
    expect(ingress.exitInfo()).toBeUndefined();
  });
});
