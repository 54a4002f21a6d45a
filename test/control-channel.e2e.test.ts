import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import {
  type ControlChannelCertificates,
  createControlChannelCertificates,
} from '@sekisho/devstack/control-channel-certs';
import { BOOTSTRAP_TEMPLATE, type EnvoyHandle, startEnvoy } from '@sekisho/devstack/envoy';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { AggregatedDiscoveryServiceClient } from '@sekisho/proto/envoy/service/discovery/v3/ads';
import { DiscoveryRequest, type DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { nodeViewKey, policyResourceNames, policyTypeUrls, policyViews } from '@sekisho/service-kit/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStackLogsOnFailure, writeDefinitionFile } from './support';

// The control channel secured end to end: the whole stack (Envoy, ext-authz, the rate-limit
// service) takes its configuration over mutual TLS, and clients without a valid certificate —
// none, one of another CA, or one whose identity does not allow the view its node claims —
// are refused, through a real Envoy and a real grpc-js client.

const secretType = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

let stack: Stack;
let dir: string;
let channel: ControlChannelCertificates;
let foreign: ControlChannelCertificates;
const envoys: EnvoyHandle[] = [];
const clients: AggregatedDiscoveryServiceClient[] = [];

interface StatusBody {
  nodes: Array<{ nodeId?: string; nodeCluster?: string; types: Record<string, { ackedVersion?: string }> }>;
}

const controlPlaneStatus = async (): Promise<StatusBody> =>
  (await (await fetch(`${stack.controlPlaneAdminUrl}/status`)).json()) as StatusBody;

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The project's bootstrap with the xds cluster's transport socket replaced by `socket`. */
async function templateWith(name: string, socket: unknown): Promise<string> {
  const template = (await readFile(BOOTSTRAP_TEMPLATE, 'utf8')).replace(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the bootstrap template's placeholder
    '${XDS_TRANSPORT_SOCKET}',
    JSON.stringify(socket),
  );
  const file = join(dir, `${name}.bootstrap.yaml`);
  await writeFile(file, template);
  return file;
}

const tlsSocket = (common: Record<string, unknown>) => ({
  name: 'envoy.transport_sockets.tls',
  typed_config: {
    '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
    sni: channel.serverName,
    common_tls_context: {
      alpn_protocols: ['h2'],
      validation_context: { trusted_ca: { filename: channel.caFile } },
      ...common,
    },
  },
});

async function outsideEnvoy(
  nodeId: string,
  cluster: string,
  options: { template?: string; certificate?: { certFile: string; keyFile: string } },
) {
  const envoy = await startEnvoy({
    nodeId,
    cluster,
    controlPlane: {
      host: '127.0.0.1',
      port: stack.xdsPort,
      ...(options.certificate
        ? { tls: { caFile: channel.caFile, ...options.certificate, serverName: channel.serverName } }
        : {}),
    },
    adminPort: 0,
    concurrency: 1,
    ...(options.template ? { template: options.template } : {}),
  });
  envoys.push(envoy);
  return envoy;
}

/** `attempts` connections to the control plane failed, none completed a TLS handshake, and Envoy has no configuration. */
async function expectRefusedInHandshake(envoy: EnvoyHandle, nodeId: string, attempts = 3) {
  await until(`${nodeId} to fail ${attempts} connections to the control plane`, async () => {
    const stats = await envoy.stats('^cluster\\.sekisho_xds\\.upstream_cx_connect_fail$');
    return (stats['cluster.sekisho_xds.upstream_cx_connect_fail'] ?? 0) >= attempts;
  });
  expect(await envoy.stats('^cluster\\.sekisho_xds\\.ssl\\.handshake$')).toEqual({
    'cluster.sekisho_xds.ssl.handshake': 0,
  });
  expect(await envoy.xdsConnected()).toBe(false);
  const dump = JSON.stringify(await envoy.configDump('dynamic_active_clusters'));
  expect(dump).not.toContain('svc_customer');
  expect((await controlPlaneStatus()).nodes.map((n) => n.nodeId)).not.toContain(nodeId);
}

function adsClient(certificate?: { certFile: string; keyFile: string }) {
  const client = new AggregatedDiscoveryServiceClient(
    `127.0.0.1:${stack.xdsPort}`,
    credentials.createSsl(
      readFileSync(channel.caFile),
      certificate ? readFileSync(certificate.keyFile) : null,
      certificate ? readFileSync(certificate.certFile) : null,
    ),
    { 'grpc.ssl_target_name_override': channel.serverName },
  );
  clients.push(client);
  return client;
}

/** Opens a stream, sends one request, and resolves with its first response or its error. */
function firstAnswer(client: AggregatedDiscoveryServiceClient, request: Partial<DiscoveryRequest>) {
  return new Promise<DiscoveryResponse | ServiceError>((resolve) => {
    const call = client.streamAggregatedResources();
    call.on('data', (response: DiscoveryResponse) => {
      resolve(response);
      call.cancel();
    });
    call.on('error', (error: ServiceError) => resolve(error));
    call.write(DiscoveryRequest.fromPartial(request));
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-e2e-channel-'));
  const [gateway, customer, extAuthz, rateLimit] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const definitionFile = join(dir, 'gateway.yaml');
  await writeDefinitionFile(definitionFile, {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-e2e' },
      groupClaim: 'tier',
      groups: { basic_customer: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
    },
    services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
    limits: { authenticated: [{ per: 'user', limit: 3, window: '1m' }] },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
    ],
  });
  // The default: a CA and certificates made for this run.
  stack = await startStack({ definitionFile, logLevel: 'info', envoyConcurrency: 1 });
  channel = stack.controlChannel as ControlChannelCertificates;
  foreign = await createControlChannelCertificates(join(dir, 'foreign'), { clients: ['ingress'] });
}, 180_000);

afterAll(async () => {
  for (const client of clients) client.close();
  for (const envoy of envoys) await envoy.stop();
  await stack?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the stack over a mutual-TLS control channel', () => {
  it('serves requests with configuration and policy that all came over mTLS', async () => {
    showStackLogsOnFailure(() => stack, 60);
    expect(channel).toBeDefined();
    expect(stack.logs()).toMatch(/"event_type":"control_plane_ready".*"control_channel":"mtls"/);
    // The stack's Envoy reached the control plane through a TLS handshake, never in plaintext.
    const envoyStats = await (
      await fetch(`${stack.envoyAdminUrl}/stats?filter=^cluster\\.sekisho_xds\\.ssl\\.handshake$`)
    ).text();
    expect(Number(/ssl\.handshake: (\d+)/.exec(envoyStats)?.[1])).toBeGreaterThanOrEqual(1);
    const nodes = (await controlPlaneStatus()).nodes;
    expect(nodes.map((n) => n.nodeCluster).sort()).toEqual(['sekisho', 'sekisho', 'sekisho-ingress']);
    for (const node of nodes) expect(Object.values(node.types).every((t) => t.ackedVersion)).toBe(true);

    const token = await stack.mintToken('user-mtls', { group: 'basic_customer' });
    const ok = await fetch(`${stack.gatewayUrl}/api/v1/customer/profile`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(ok.status).toBe(200);
    // ext-authz enforces the policy it verified came from the control plane; the rate-limit
    // service's limit (3 a minute) is the definition's.
    expect((await fetch(`${stack.gatewayUrl}/api/v1/customer/profile`)).status).toBe(401);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++)
      statuses.push(
        (await fetch(`${stack.gatewayUrl}/api/v1/customer/profile`, { headers: { authorization: `Bearer ${token}` } }))
          .status,
      );
    expect(statuses).toContain(429);
  });
});

describe('clients without a valid certificate are refused', () => {
  it('an Envoy that presents no client certificate never gets past the handshake', async () => {
    showStackLogsOnFailure(() => stack, 30);
    const template = await templateWith('no-cert', tlsSocket({}));
    const envoy = await outsideEnvoy('envoy-without-cert', 'sekisho-ingress', { template });
    await expectRefusedInHandshake(envoy, 'envoy-without-cert');
  });

  it('an Envoy whose certificate another CA signed never gets past the handshake', async () => {
    showStackLogsOnFailure(() => stack, 30);
    const envoy = await outsideEnvoy('envoy-foreign-ca', 'sekisho-ingress', { certificate: foreign.clients.ingress });
    await expectRefusedInHandshake(envoy, 'envoy-foreign-ca');
  });

  it("an Envoy with ext-authz's certificate claiming to be the ingress is refused its view", async () => {
    showStackLogsOnFailure(() => stack, 30);
    const envoy = await outsideEnvoy('impostor-ingress', 'sekisho-ingress', {
      certificate: channel.clients['ext-authz'],
    });
    await until('the control plane to refuse the impostor twice', async () => {
      const refusals = stack
        .logs()
        .split('\n')
        .filter(
          (line) => line.includes('"event_type":"xds_node_refused"') && line.includes('"node_id":"impostor-ingress"'),
        );
      return refusals.length >= 2;
    });
    expect(stack.logs()).toMatch(/"node_id":"impostor-ingress".*"identity":"spiffe:\/\/sekisho\.local\/ext-authz"/);
    expect(JSON.stringify(await envoy.configDump('dynamic_active_clusters'))).not.toContain('svc_customer');
    expect(await envoy.serverState()).not.toBe('LIVE');
  });

  it('a grpc-js client gets UNAVAILABLE without a certificate and PERMISSION_DENIED outside its view', async () => {
    showStackLogsOnFailure(() => stack, 30);
    const node = (cluster: string) => Node.fromPartial({ id: `grpc-js-${cluster}`, cluster });
    // service-kit's policy client: cluster `sekisho`, its view named in the node metadata.
    const policyNode = (view: string) =>
      Node.fromPartial({ id: `grpc-js-${view}`, cluster: 'sekisho', metadata: { [nodeViewKey]: view } });
    const noCert = (await firstAnswer(adsClient(), {
      typeUrl: secretType,
      node: node('sekisho-ingress'),
    })) as ServiceError;
    expect(noCert.code).toBe(status.UNAVAILABLE);

    const foreignCa = (await firstAnswer(adsClient(foreign.clients.ingress), {
      typeUrl: secretType,
      node: node('sekisho-ingress'),
    })) as ServiceError;
    expect(foreignCa.code).toBe(status.UNAVAILABLE);

    // The rate-limit service's certificate may read its policy, and nothing else.
    const ratelimit = channel.clients.ratelimit as { certFile: string; keyFile: string };
    const policy = (await firstAnswer(adsClient(ratelimit), {
      typeUrl: policyTypeUrls.rateLimit,
      resourceNames: [policyResourceNames.rateLimit],
      node: policyNode(policyViews.rateLimit),
    })) as DiscoveryResponse;
    expect(policy.typeUrl).toBe(policyTypeUrls.rateLimit);
    const secrets = (await firstAnswer(adsClient(ratelimit), {
      typeUrl: secretType,
      node: policyNode(policyViews.rateLimit),
    })) as ServiceError;
    expect(secrets.code).toBe(status.PERMISSION_DENIED);
    const authz = (await firstAnswer(adsClient(ratelimit), {
      typeUrl: policyTypeUrls.authz,
      resourceNames: [policyResourceNames.authz],
      node: policyNode(policyViews.rateLimit),
    })) as ServiceError;
    expect(authz.code).toBe(status.PERMISSION_DENIED);
    // Naming ext-authz's view in its node does not get it ext-authz's policy either.
    const impostor = (await firstAnswer(adsClient(ratelimit), {
      typeUrl: policyTypeUrls.authz,
      resourceNames: [policyResourceNames.authz],
      node: policyNode(policyViews.extAuthz),
    })) as ServiceError;
    expect(impostor.code).toBe(status.PERMISSION_DENIED);
  });
});
