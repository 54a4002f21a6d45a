import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { type EnvoyHandle, startEnvoy } from '@sekisho/devstack/envoy';
import { freePort } from '@sekisho/devstack/processes';
import {
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthClient,
} from '@sekisho/proto/grpc/health/v1/health';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

// The lean node:http2 gRPC server (the policy services' default transport) behind a real
// Envoy 1.40: Envoy's own gRPC health checker (what takes a policy replica out of rotation)
// and gRPC calls Envoy proxies to it, with Envoy's grpc-timeout propagation.

const cluster = 'lean_grpc';

function bootstrap(grpcPort: number, listenerPort: number): string {
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
                          route: { cluster: ${cluster}, max_stream_duration: { grpc_timeout_header_max: 10s } }
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
          explicit_http_config: { http2_protocol_options: {} }
      health_checks:
        - timeout: 1s
          interval: 0.2s
          # Without traffic Envoy would check only every 60 s.
          no_traffic_interval: 0.2s
          unhealthy_threshold: 1
          healthy_threshold: 1
          grpc_health_check: {}
      load_assignment:
        cluster_name: ${cluster}
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${grpcPort} } } }
`;
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
    const listenerPort = await freePort();
    dir = await mkdtemp(join(tmpdir(), 'sekisho-transport-'));
    const template = join(dir, 'bootstrap.yaml');
    await writeFile(template, bootstrap(server.port, listenerPort));
    envoy = await startEnvoy({
      nodeId: 'transport-test',
      cluster: 'transport-test',
      controlPlane: { host: '127.0.0.1', port: 1 },
      template,
      concurrency: 1,
    });
    await envoy.waitForListener('grpc_in', 30_000);
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
