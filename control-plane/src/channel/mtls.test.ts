import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import {
  type ControlChannelCertificates,
  controlPlaneServerName,
  createControlChannelCertificates,
} from '@sekisho/devstack/control-channel-certs';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { AggregatedDiscoveryServiceClient } from '@sekisho/proto/envoy/service/discovery/v3/ads';
import { ConfigError } from '@sekisho/service-kit/config';
import { nodeViewKey, policyResourceNames, policyViews } from '@sekisho/service-kit/contract';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, configSchema, loadControlPlaneConfig, startControlPlane } from '../main';
import { AdsTestStream, captureLogger, eventually, namesIn, testDefinitionYaml } from '../xds/test-helpers';
import { typeUrls } from '../xds/type-urls';

// The control channel over real TLS sockets and real grpc-js: a client without a valid
// certificate never gets past the handshake, and a valid one reads only the views its identity
// allows.

let dir: string;
let certs: ControlChannelCertificates;
let foreign: ControlChannelCertificates;
let cp: ControlPlane;
const { logger, records } = captureLogger('info');
const clients: AggregatedDiscoveryServiceClient[] = [];

function client(files?: { certFile: string; keyFile: string }, caFile = certs.caFile) {
  const c = new AggregatedDiscoveryServiceClient(
    `127.0.0.1:${cp.xdsPort}`,
    credentials.createSsl(
      readFileSync(caFile),
      files ? readFileSync(files.keyFile) : null,
      files ? readFileSync(files.certFile) : null,
    ),
    { 'grpc.ssl_target_name_override': controlPlaneServerName },
  );
  clients.push(c);
  return c;
}

const node = (cluster: string, id = `${cluster}-node`) => Node.fromPartial({ id, cluster });
/** service-kit's policy client: cluster `sekisho`, its view named in the node metadata. */
const policyNode = (view: string) =>
  Node.fromPartial({ id: `${view}-node`, cluster: 'sekisho', metadata: { [nodeViewKey]: view } });

async function ended(stream: AdsTestStream): Promise<ServiceError> {
  const error = await eventually(() => stream.ended, 10_000, 'the stream to end');
  if (error === 'ok') throw new Error('the stream ended with OK');
  return error;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-mtls-'));
  certs = await createControlChannelCertificates(join(dir, 'pki'));
  foreign = await createControlChannelCertificates(join(dir, 'foreign'));
  await writeFile(join(dir, 'gateway.yaml'), testDefinitionYaml());
  // The server's files are copies, so the rotation test can replace them.
  await copyFile(certs.controlPlane.certFile, join(dir, 'server.crt'));
  await copyFile(certs.controlPlane.keyFile, join(dir, 'server.key'));
  const config = configSchema.parse({
    CONTROL_PLANE_DEFINITION: 'gateway.yaml',
    CONTROL_PLANE_XDS_PORT: '0',
    CONTROL_PLANE_ADMIN_PORT: '0',
    CONTROL_PLANE_TLS_CERT_FILE: join(dir, 'server.crt'),
    CONTROL_PLANE_TLS_KEY_FILE: join(dir, 'server.key'),
    CONTROL_PLANE_TLS_CLIENT_CA_FILE: certs.caFile,
  });
  cp = await startControlPlane(config, { logger, registry: new Registry(), cwd: dir, tls: { pollIntervalMs: 50 } });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await cp?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('control channel over mutual TLS', () => {
  it('says at start-up that the channel is mutual TLS', () => {
    expect(records).toContainEqual(
      expect.objectContaining({
        message: 'control plane ready',
        control_channel: 'mtls',
        trust_domain: 'sekisho.local',
      }),
    );
  });

  it('serves the ingress view to a client whose certificate is spiffe://sekisho.local/ingress', async () => {
    const stream = new AdsTestStream(client(certs.clients.ingress));
    stream.send({ typeUrl: typeUrls.cluster, node: node('sekisho-ingress') });
    expect(namesIn(await stream.next(10_000))).toContain('svc_customer');
    stream.cancel();
  });

  it('serves ext-authz its policy, and nothing of the ingress (no TLS keys over SDS)', async () => {
    const policy = new AdsTestStream(client(certs.clients['ext-authz']));
    policy.send({
      typeUrl: typeUrls.authzPolicy,
      resourceNames: [policyResourceNames.authz],
      node: policyNode(policyViews.extAuthz),
    });
    expect((await policy.next(10_000)).typeUrl).toBe(typeUrls.authzPolicy);
    policy.cancel();

    const secrets = new AdsTestStream(client(certs.clients['ext-authz']));
    secrets.send({
      typeUrl: typeUrls.secret,
      resourceNames: ['ingress_https_default'],
      node: policyNode(policyViews.extAuthz),
    });
    const error = await ended(secrets);
    expect(error.code).toBe(status.PERMISSION_DENIED);
    expect(error.details).toContain(typeUrls.secret);
  });

  it('refuses a node that claims a view its certificate does not allow', async () => {
    const stream = new AdsTestStream(client(certs.clients['ext-authz']));
    stream.send({ typeUrl: typeUrls.cluster, node: node('sekisho-ingress', 'impostor') });
    const error = await ended(stream);
    expect(error.code).toBe(status.PERMISSION_DENIED);
    expect(error.details).toMatch(/spiffe:\/\/sekisho\.local\/ext-authz allows ext-authz .*claims ingress/);
    expect(records).toContainEqual(
      expect.objectContaining({
        event_type: 'xds_node_refused',
        node_id: 'impostor',
        identity: 'spiffe://sekisho.local/ext-authz',
      }),
    );
  });

  it("refuses a policy service whose node metadata names another view than its certificate's", async () => {
    const stream = new AdsTestStream(client(certs.clients.ratelimit));
    stream.send({
      typeUrl: typeUrls.authzPolicy,
      resourceNames: [policyResourceNames.authz],
      node: policyNode(policyViews.extAuthz),
    });
    const error = await ended(stream);
    expect(error.code).toBe(status.PERMISSION_DENIED);
    expect(error.details).toMatch(/spiffe:\/\/sekisho\.local\/ratelimit allows ratelimit .*claims ext-authz/);
  });

  it('refuses a certificate of the right CA whose identity is another trust domain', async () => {
    const other = await certs.issueClient('other-domain', ['spiffe://example.org/ingress']);
    const stream = new AdsTestStream(client(other));
    stream.send({ typeUrl: typeUrls.cluster, node: node('sekisho-ingress') });
    expect((await ended(stream)).code).toBe(status.PERMISSION_DENIED);
  });

  it.each([
    ['no client certificate', () => undefined],
    ['a certificate of another CA', () => foreign.clients.ingress],
  ])('refuses a client with %s in the TLS handshake', async (_, files) => {
    const stream = new AdsTestStream(client(files()));
    stream.send({ typeUrl: typeUrls.cluster, node: node('sekisho-ingress') });
    const error = await ended(stream);
    expect(error.code).toBe(status.UNAVAILABLE);
    await expect(stream.next(200)).rejects.toThrow(/no DiscoveryResponse/);
  });

  it('refuses plaintext clients', async () => {
    const c = new AggregatedDiscoveryServiceClient(`127.0.0.1:${cp.xdsPort}`, credentials.createInsecure());
    clients.push(c);
    const stream = new AdsTestStream(c);
    stream.send({ typeUrl: typeUrls.cluster, node: node('sekisho-ingress') });
    expect((await ended(stream)).code).toBe(status.UNAVAILABLE);
  });

  it('serves a rotated server certificate to new connections without a restart, never a mismatched one', async () => {
    const serialSeen = () =>
      new Promise<string>((resolve, reject) => {
        const socket = connect({
          host: '127.0.0.1',
          port: cp.xdsPort,
          ca: readFileSync(certs.caFile),
          cert: readFileSync(certs.clients.ingress?.certFile as string),
          key: readFileSync(certs.clients.ingress?.keyFile as string),
          servername: controlPlaneServerName,
          ALPNProtocols: ['h2'],
        });
        socket.once('secureConnect', () => {
          resolve(socket.getPeerCertificate().serialNumber.toLowerCase());
          socket.destroy();
        });
        socket.once('error', reject);
      });
    const before = await serialSeen();
    // A key that is not the certificate's (a half-finished rotation) is refused; the old pair stays.
    await copyFile(certs.clients.ingress?.keyFile as string, join(dir, 'server.key'));
    await eventually(
      () => records.some((r) => r.event_type === 'control_channel_certificate_invalid'),
      10_000,
      'the mismatched key to be noticed',
    );
    expect(await serialSeen()).toBe(before);
    // A new server certificate of the same CA, copied over the served files key first.
    const next = await createControlChannelCertificates(join(dir, 'next'), { clients: [], ca: certs.ca });
    await copyFile(next.controlPlane.keyFile, join(dir, 'server.key'));
    await copyFile(next.controlPlane.certFile, join(dir, 'server.crt'));
    const expected = new X509Certificate(readFileSync(next.controlPlane.certFile)).serialNumber.toLowerCase();
    expect(expected).not.toBe(before);
    await eventually(async () => (await serialSeen()) === expected, 10_000, 'the new certificate to be served');
    expect(records).toContainEqual(expect.objectContaining({ event_type: 'control_channel_certificate_reloaded' }));
  });
});

describe('control channel without TLS', () => {
  it('binds to loopback and says so at start-up', async () => {
    const plain = captureLogger('info');
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: 'gateway.yaml',
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
    });
    const running = await startControlPlane(config, { logger: plain.logger, registry: new Registry(), cwd: dir });
    try {
      expect(plain.records).toContainEqual(
        expect.objectContaining({
          event_type: 'control_channel_plaintext',
          host: '127.0.0.1',
          message: expect.stringMatching(
            /serving ADS on loopback \(127\.0\.0\.1\) only; set CONTROL_PLANE_TLS_CERT_FILE/,
          ),
        }),
      );
      expect(plain.records).toContainEqual(
        expect.objectContaining({ message: 'control plane ready', control_channel: 'plaintext' }),
      );
    } finally {
      await running.close();
    }
  });
});

describe('control channel configuration', () => {
  const base = { CONTROL_PLANE_DEFINITION: 'gateway.yaml' };
  const problems = (env: Record<string, string>) => {
    try {
      loadControlPlaneConfig(env);
      return [];
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return error.problems;
    }
  };

  it('names each missing TLS variable when only some are set', () => {
    expect(problems({ ...base, CONTROL_PLANE_TLS_CERT_FILE: '/x.crt' })).toEqual([
      expect.objectContaining({ variable: 'CONTROL_PLANE_TLS_KEY_FILE' }),
      expect.objectContaining({ variable: 'CONTROL_PLANE_TLS_CLIENT_CA_FILE' }),
    ]);
  });

  it('refuses a non-loopback bind address without TLS, unless CONTROL_PLANE_ALLOW_INSECURE=true', () => {
    // The admin server on loopback: its own refusal (no token off loopback) is tested in admin-api.test.ts.
    const admin = { CONTROL_PLANE_ADMIN_HOST: '127.0.0.1' };
    expect(problems({ ...base, ...admin, CONTROL_PLANE_HOST: '0.0.0.0' })).toEqual([
      expect.objectContaining({ variable: 'CONTROL_PLANE_HOST', message: expect.stringMatching(/not a loopback/) }),
    ]);
    expect(
      problems({ ...base, ...admin, CONTROL_PLANE_HOST: '0.0.0.0', CONTROL_PLANE_ALLOW_INSECURE: 'true' }),
    ).toEqual([]);
    expect(problems({ ...base, CONTROL_PLANE_HOST: '::1' })).toEqual([]);
  });

  it('names the variable of an unreadable file and of a key that is not the certificate’s', () => {
    expect(
      problems({
        ...base,
        CONTROL_PLANE_TLS_CERT_FILE: certs.controlPlane.certFile,
        CONTROL_PLANE_TLS_KEY_FILE: join(dir, 'missing.key'),
        CONTROL_PLANE_TLS_CLIENT_CA_FILE: certs.caFile,
      }),
    ).toEqual([
      expect.objectContaining({ variable: 'CONTROL_PLANE_TLS_KEY_FILE', message: expect.stringMatching(/ENOENT/) }),
    ]);
    expect(
      problems({
        ...base,
        CONTROL_PLANE_TLS_CERT_FILE: certs.controlPlane.certFile,
        CONTROL_PLANE_TLS_KEY_FILE: certs.clients.ingress?.keyFile as string,
        CONTROL_PLANE_TLS_CLIENT_CA_FILE: certs.controlPlane.certFile,
      }),
    ).toEqual([
      expect.objectContaining({
        variable: 'CONTROL_PLANE_TLS_CLIENT_CA_FILE',
        message: expect.stringMatching(/not a CA/),
      }),
      expect.objectContaining({
        variable: 'CONTROL_PLANE_TLS_KEY_FILE',
        message: expect.stringMatching(/not the key/),
      }),
    ]);
  });

  it('refuses a trust domain that is not a lower-case DNS name', () => {
    expect(problems({ ...base, CONTROL_PLANE_TLS_TRUST_DOMAIN: 'Sekisho Local' })).toEqual([
      expect.objectContaining({ variable: 'CONTROL_PLANE_TLS_TRUST_DOMAIN' }),
    ]);
  });
});
