import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
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
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

// service-kit's own HTTP/2 under a real Envoy 1.40 whose upstream windows are the smallest
// HTTP/2 allows (65,535 bytes for each stream and the connection): answers many times larger
// than the windows, and many of them at once, must arrive whole through flow control.

const cluster = 'h2_upstream';

function bootstrap(grpcPort: number, listenerPort: number): string {
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
                          route: { cluster: ${cluster}, timeout: 20s }
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
          explicit_http_config:
            http2_protocol_options:
              initial_stream_window_size: 65535
              initial_connection_window_size: 65535
      load_assignment:
        cluster_name: ${cluster}
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${grpcPort} } } }
`;
}

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
    const listenerPort = await freePort();
    dir = await mkdtemp(join(tmpdir(), 'sekisho-h2-'));
    const template = join(dir, 'bootstrap.yaml');
    await writeFile(template, bootstrap(server.port, listenerPort));
    envoy = await startEnvoy({
      nodeId: 'h2-transport-test',
      cluster: 'h2-transport-test',
      controlPlane: { host: '127.0.0.1', port: 1 },
      template,
      concurrency: 1,
    });
    await envoy.waitForListener('grpc_in', 30_000);
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
