import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type EnvoyHandle, startEnvoy } from '@sekisho/devstack/envoy';
import { freePort, type ManagedProcess, spawnProcess } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

// A team's envoyproxy/ratelimit setup moved to Sekisho unchanged: a real Envoy 1.40 with its
// own static configuration (ratelimit filter, domain `edge_files`, rate_limits actions on the
// route), the rate-limit service started as an operator starts it with only
// RATELIMIT_CONFIG_DIR and Redis (no control plane), and a real redis-server.

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx');
const main = join(repoRoot, 'ratelimit-service', 'src', 'main.ts');

let redis: RedisHandle;
let dir: string;
let service: ManagedProcess;
let adminPort: number;
let upstream: Server;
let envoy: EnvoyHandle;
let listenPort: number;

const limitsFile = (perMinute: number) => `
domain: edge_files
descriptors:
  - key: route
    value: api
    descriptors:
      - key: user
        rate_limit: { unit: minute, requests_per_unit: ${perMinute} }
      - key: user
        value: vip
        rate_limit: { unlimited: true }
`;

// Envoy's own static configuration, as such a team runs it: no xDS at all.
const bootstrap = (ports: { listen: number; rateLimit: number; upstream: number }) => `
node: { id: "\${NODE_ID}", cluster: "\${NODE_CLUSTER}" }
admin:
  address: { socket_address: { address: "\${ADMIN_ADDRESS}", port_value: \${ADMIN_PORT} } }
static_resources:
  listeners:
    - name: edge
      address: { socket_address: { address: 127.0.0.1, port_value: ${ports.listen} } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: edge
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/api/" }
                          route:
                            cluster: upstream
                            rate_limits:
                              - actions:
                                  - generic_key: { descriptor_key: route, descriptor_value: api }
                                  - request_headers: { header_name: x-user, descriptor_key: user }
                http_filters:
                  - name: envoy.filters.http.ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
                      domain: edge_files
                      # A service that does not answer fails the request: a 200 proves it decided.
                      failure_mode_deny: true
                      timeout: 2s
                      rate_limit_service:
                        transport_api_version: V3
                        grpc_service: { envoy_grpc: { cluster_name: ratelimit } }
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: ratelimit
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: ratelimit
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${ports.rateLimit} } } }
    - name: upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${ports.upstream} } } }
`;

const get = async (user: string) => {
  const response = await fetch(`http://127.0.0.1:${listenPort}/api/items`, { headers: { 'x-user': user } });
  return { status: response.status, headers: response.headers, body: await response.text() };
};

interface ServiceStatus {
  config_dir: { domains: Array<{ domain: string; version: string }>; errors: Array<Record<string, unknown>> };
}
const statusOf = async () => (await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json()) as ServiceStatus;

beforeAll(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'sekisho-rl-files-'));
  await writeFile(join(dir, 'edge.yaml'), limitsFile(2));
  const [grpcPort, admin, listen] = await Promise.all([freePort(), freePort(), freePort()]);
  adminPort = admin;
  listenPort = listen;
  service = spawnProcess({
    name: 'ratelimit-service',
    command: tsx,
    args: [main],
    env: {
      ...process.env,
      RATELIMIT_GRPC_PORT: String(grpcPort),
      RATELIMIT_ADMIN_PORT: String(adminPort),
      RATELIMIT_REDIS_URL: redis.url,
      RATELIMIT_CONFIG_DIR: dir,
      RATELIMIT_CONFIG_POLL_INTERVAL: '200ms',
    },
  });
  await service.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 30_000);

  upstream = createServer((_req, res) => res.end('from upstream'));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const template = join(dir, 'envoy-static.yaml.template');
  await writeFile(
    template,
    bootstrap({ listen, rateLimit: grpcPort, upstream: (upstream.address() as AddressInfo).port }),
  );
  envoy = await startEnvoy({
    nodeId: 'ratelimit-files-e2e',
    cluster: 'sekisho-test',
    // Unused by this static bootstrap (it has no ADS); required by the renderer.
    controlPlane: { host: '127.0.0.1', port: 1 },
    concurrency: 1,
    template,
  });
  await envoy.waitForListener('edge', 30_000);
}, 120_000);

afterAll(async () => {
  await envoy?.stop();
  upstream?.close();
  await service?.stop();
  await redis?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('envoyproxy/ratelimit files through a real Envoy', () => {
  it('limits per user at the file limit, with the 429 and its headers; an unlimited value passes', async () => {
    onTestFailed(() => console.error(envoy?.logs().slice(-4000), service?.logs().slice(-4000)));
    expect((await get('alice')).status).toBe(200);
    const second = await get('alice');
    expect(second.status).toBe(200);
    expect(second.headers.get('ratelimit')).toMatch(/;r=0;t=\d+$/);
    const third = await get('alice');
    expect(third.status).toBe(429);
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(third.headers.get('ratelimit-policy')).toMatch(/;q=2;w=60$/);
    // Another user has a counter of their own; the exact value `vip` is unlimited.
    expect((await get('bob')).status).toBe(200);
    for (let i = 0; i < 4; i++) expect((await get('vip')).status).toBe(200);
  });

  it('applies an edited file while running, and keeps it when a later edit is broken', async () => {
    onTestFailed(() => console.error(service?.logs().slice(-4000)));
    const before = (await statusOf()).config_dir.domains[0]?.version;
    await writeFile(join(dir, 'edge.yaml'), limitsFile(4));
    await expect
      .poll(async () => (await statusOf()).config_dir.domains[0]?.version, { timeout: 10_000 })
      .not.toBe(before);
    for (let i = 0; i < 4; i++) expect((await get('carol')).status).toBe(200);
    expect((await get('carol')).status).toBe(429);

    await writeFile(join(dir, 'edge.yaml'), `${limitsFile(1)}\nunexpected: true\n`);
    await expect
      .poll(async () => (await statusOf()).config_dir.errors, { timeout: 10_000 })
      .toEqual([
        expect.objectContaining({ file: 'edge.yaml', path: 'unexpected', reason: 'unknown key "unexpected"' }),
      ]);
    // The limit of 4 stays in force, not 1.
    for (let i = 0; i < 4; i++) expect((await get('dave')).status).toBe(200);
    expect((await get('dave')).status).toBe(429);
  });
});
