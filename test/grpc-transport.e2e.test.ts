import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { type EnvoyHandle, startEnvoy } from '@sekisho/devstack/envoy';
import { freePort } from '@sekisho/devstack/processes';
import {
  RateLimitRequest,
  RateLimitResponse,
  RateLimitResponse_Code,
  RateLimitServiceClient,
  type RateLimitServiceServer,
  RateLimitServiceService,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import {
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthClient,
} from '@sekisho/proto/grpc/health/v1/health';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

// service-kit's lean gRPC server on its own HTTP/2 (the policy services' transport) behind a
// real Envoy 1.40: Envoy's own gRPC health checker (what takes a policy replica out of
// rotation) and gRPC calls Envoy proxies to it, with Envoy's grpc-timeout propagation; and
// answers many times larger than the smallest upstream windows HTTP/2 allows (65,535 bytes
// for each stream and the connection), many at once, arriving whole through flow control.

const cluster = 'lean_grpc';

const healthChecked = {
  route: 'max_stream_duration: { grpc_timeout_header_max: 10s }',
  http2: '{}',
  extra: `      health_checks:
        - timeout: 1s
          interval: 0.2s
          # Without traffic Envoy would check only every 60 s.
          no_traffic_interval: 0.2s
          unhealthy_threshold: 1
          healthy_threshold: 1
          grpc_health_check: {}
`,
};
const smallestWindows = {
  route: 'timeout: 20s',
  http2: '{ initial_stream_window_size: 65535, initial_connection_window_size: 65535 }',
  extra: '',
};

function bootstrap(
  grpcPort: number,
  listenerPort: number,
  variant: { route: string; http2: string; extra: string },
): string {
  // A static bootstrap; ${ADMIN_ADDRESS} and ${ADMIN_PORT} are filled in by devstack.
  return `
admin:
  address: { socket_address: { address: "\${ADMIN_ADDRESS}", port_value: \${ADMIN_PORT} } }
static_resources:
  listeners:
    - name: grpc_in
      address: { socket_address: { address: 127.0.0.1, port_value: ${listenerPort} } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: grpc_in
                codec_type: HTTP2
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route: { cluster: ${cluster}, ${variant.route} }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: ${cluster}
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: ${variant.http2} }
${variant.extra}      load_assignment:
        cluster_name: ${cluster}
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${grpcPort} } } }
`;
}

/** A real Envoy proxying `grpc_in` to the gRPC server on `grpcPort` with the bootstrap `variant`. */
async function envoyInFront(
  name: string,
  grpcPort: number,
  variant: { route: string; http2: string; extra: string },
): Promise<{ envoy: EnvoyHandle; dir: string; listenerPort: number }> {
  const listenerPort = await freePort();
  const dir = await mkdtemp(join(tmpdir(), `sekisho-${name}-`));
  const template = join(dir, 'bootstrap.yaml');
  await writeFile(template, bootstrap(grpcPort, listenerPort, variant));
  const envoy = await startEnvoy({
    nodeId: name,
    cluster: name,
    controlPlane: { host: '127.0.0.1', port: 1 },
    template,
    concurrency: 1,
  });
  await envoy.waitForListener('grpc_in', 30_000);
  return { envoy, dir, listenerPort };
}

interface HostHealth {
  health_status?: { failed_active_health_check?: boolean };
}

async function hostFailed(envoy: EnvoyHandle): Promise<boolean | undefined> {
  const clusters = JSON.parse(await envoy.admin('/clusters?format=json')) as {
    cluster_statuses?: Array<{ name: string; host_statuses?: HostHealth[] }>;
  };
  const host = clusters.cluster_statuses?.find((c) => c.name === cluster)?.host_statuses?.[0];
  return host ? Boolean(host.health_status?.failed_active_health_check) : undefined;
}

async function eventually(what: string, condition: () => Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('the http2 gRPC transport behind a real Envoy', () => {
  let serving = false;
  let server: GrpcServer;
  let envoy: EnvoyHandle;
  let dir: string;
  let client: HealthClient;

  beforeAll(async () => {
    server = await startGrpcServer({ port: 0, register: () => {}, isServing: () => serving, transport: 'http2' });
    let listenerPort: number;
    ({ envoy, dir, listenerPort } = await envoyInFront('transport-test', server.port, healthChecked));
    client = new HealthClient(`127.0.0.1:${listenerPort}`, credentials.createInsecure());
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await envoy?.stop();
    await server?.close(0);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const showLogs = () => onTestFailed(() => console.log(envoy.logs()));

  it("takes the host out while it answers NOT_SERVING to Envoy's gRPC health check, and back in once SERVING", async () => {
    showLogs();
    await eventually('Envoy to have checked the host', async () => (await hostFailed(envoy)) === true);
    serving = true;
    await envoy.waitForHealthyCluster(cluster, 10_000);
    serving = false;
    await eventually('the host to fail its health check', async () => (await hostFailed(envoy)) === true);
    serving = true;
    await envoy.waitForHealthyCluster(cluster, 10_000);
    const stats = await envoy.stats(`^cluster\\.${cluster}\\.health_check\\.`);
    expect(stats[`cluster.${cluster}.health_check.success`]).toBeGreaterThan(0);
    expect(stats[`cluster.${cluster}.health_check.failure`]).toBeGreaterThan(0);
  });

  it('answers gRPC calls proxied by Envoy: Check, UNIMPLEMENTED for an unknown method, NOT_FOUND with a grpc-timeout Envoy passes on', async () => {
    showLogs();
    serving = true;
    const answer = await new Promise<HealthCheckResponse>((resolve, reject) =>
      client.check({ service: '' }, (error, response) => (error ? reject(error) : resolve(response))),
    );
    expect(answer.status).toBe(HealthCheckResponse_ServingStatus.SERVING);

    const unknown = await new Promise<ServiceError>((resolve) =>
      client.makeUnaryRequest(
        '/no.such.Service/Method',
        () => Buffer.alloc(0),
        (b: Buffer) => b,
        Buffer.alloc(0),
        (error: ServiceError | null) => resolve(error as ServiceError),
      ),
    );
    expect(unknown).toMatchObject({ code: status.UNIMPLEMENTED, details: 'unknown method /no.such.Service/Method' });

    const unknownName = await new Promise<ServiceError>((resolve) =>
      client.check({ service: 'no.such.Service' }, new Metadata(), { deadline: Date.now() + 5_000 }, (error) =>
        resolve(error as ServiceError),
      ),
    );
    expect(unknownName).toMatchObject({ code: status.NOT_FOUND });
  });
});

describe('large answers through Envoy with the smallest HTTP/2 windows', () => {
  let server: GrpcServer;
  let envoy: EnvoyHandle;
  let dir: string;
  let client: RateLimitServiceClient;

  beforeAll(async () => {
    server = await startGrpcServer({
      port: 0,
      transport: 'http2',
      register: (s) =>
        s.addService(RateLimitServiceService, {
          // The domain is the size of the raw body to answer with; each byte is the size mod 251.
          shouldRateLimit: (call, callback) => {
            const size = Number(call.request.domain) || 0;
            callback(
              null,
              RateLimitResponse.fromPartial({
                overallCode: RateLimitResponse_Code.OK,
                rawBody: Buffer.alloc(size, size % 251),
              }),
            );
          },
        } satisfies RateLimitServiceServer),
    });
    let listenerPort: number;
    ({ envoy, dir, listenerPort } = await envoyInFront('h2-transport-test', server.port, smallestWindows));
    client = new RateLimitServiceClient(`127.0.0.1:${listenerPort}`, credentials.createInsecure());
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await envoy?.stop();
    await server?.close(0);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const call = (size: number) =>
    new Promise<RateLimitResponse>((resolve, reject) =>
      client.shouldRateLimit(RateLimitRequest.fromPartial({ domain: String(size) }), (error, response) =>
        error ? reject(error) : resolve(response as RateLimitResponse),
      ),
    );
  const intact = (answer: RateLimitResponse, size: number) =>
    Buffer.from(answer.rawBody).equals(Buffer.alloc(size, size % 251));

  it('delivers answers of 100 KB and 2 MiB whole', async () => {
    onTestFailed(() => console.log(envoy.logs()));
    for (const size of [100_000, 2 << 20]) expect(intact(await call(size), size)).toBe(true);
  });

  it('delivers 20 concurrent answers of 200 KB and up, sharing the 64 KB connection window', async () => {
    onTestFailed(() => console.log(envoy.logs()));
    const sizes = Array.from({ length: 20 }, (_, i) => 200_000 + i * 9_973);
    const answers = await Promise.all(sizes.map(call));
    expect(answers.map((a, i) => intact(a, sizes[i] as number))).toEqual(sizes.map(() => true));
    const stats = await envoy.stats(`^cluster\\.${cluster}\\.upstream_rq_200$`);
    expect(stats[`cluster.${cluster}.upstream_rq_200`]).toBe(22);
  });
});
