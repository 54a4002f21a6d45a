// Convergence over state-of-the-world ADS: N simulated proxies (raw ADS clients on real gRPC
// over loopback, each subscribed to every type and ACKing every response at once, as Envoy
// does) connected to the control plane's ADS server; a one-route change is put in the snapshot
// cache and the clock runs until every proxy has received the new route configuration.
import { credentials, type ServiceError } from '@grpc/grpc-js';
import type { GatewayDefinitionInput } from '@sekisho/control-plane';
import { compileDefinition } from '@sekisho/control-plane/definition/load';
import { SnapshotCache } from '@sekisho/control-plane/xds/cache';
import type { ResourcesByType } from '@sekisho/control-plane/xds/resources';
import { createAdsServer } from '@sekisho/control-plane/xds/server';
import { pushOrder, typeUrls, wildcardTypes } from '@sekisho/control-plane/xds/type-urls';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { AggregatedDiscoveryServiceClient } from '@sekisho/proto/envoy/service/discovery/v3/ads';
import { DiscoveryRequest, type DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger } from '@sekisho/service-kit/logger';
import { Registry } from 'prom-client';
import { largeDefinition } from './large-definition';
import { percentile } from './stats';

export interface ConvergenceRow {
  case: string;
  protocol: 'sotw';
  proxies: number;
  routes: number;
  changes: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /** Resource bytes (packed Any values) sent to all proxies per change, on average. */
  bytes_pushed_per_change: number;
  /** Resources sent to all proxies per change, on average. */
  resources_pushed_per_change: number;
}

function compile(definition: GatewayDefinitionInput, baseDir: string): ResourcesByType {
  const result = compileDefinition(definition, { baseDir });
  if (!result.ok) throw new Error(`benchmark definition invalid: ${JSON.stringify(result.errors.slice(0, 3))}`);
  return result.resources;
}

/** A raw ADS client: subscribes to every type (wildcard where the server allows), ACKs everything. */
class SimulatedProxy {
  readonly versions = new Map<string, string>();
  /** Called on every response, after the ACK is written. */
  onResponse: (proxy: SimulatedProxy, response: DiscoveryResponse) => void = () => {};
  private readonly call;
  failed: ServiceError | undefined;

  constructor(
    client: AggregatedDiscoveryServiceClient,
    readonly id: string,
    private readonly names: Map<string, string[]>,
  ) {
    this.call = client.streamAggregatedResources();
    this.call.on('data', (response: DiscoveryResponse) => {
      this.versions.set(response.typeUrl, response.versionInfo);
      this.call.write(
        DiscoveryRequest.fromPartial({
          typeUrl: response.typeUrl,
          versionInfo: response.versionInfo,
          responseNonce: response.nonce,
          resourceNames: this.subscription(response.typeUrl),
        }),
      );
      this.onResponse(this, response);
    });
    this.call.on('error', (error: ServiceError) => {
      this.failed = error;
    });
    let first = true;
    for (const typeUrl of pushOrder) {
      this.call.write(
        DiscoveryRequest.fromPartial({
          typeUrl,
          resourceNames: this.subscription(typeUrl),
          ...(first ? { node: Node.fromPartial({ id, cluster: 'bench' }) } : {}),
        }),
      );
      first = false;
    }
  }

  private subscription(typeUrl: string): string[] {
    return wildcardTypes.has(typeUrl) ? [] : (this.names.get(typeUrl) ?? []);
  }

  close(): void {
    this.call.cancel();
  }
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export async function convergence(
  proxies: number,
  routes: number,
  changes: number,
  baseDir: string,
): Promise<ConvergenceRow> {
  const definition = largeDefinition(routes);
  const cache = new SnapshotCache();
  cache.setSnapshot(compile(definition, baseDir));
  const ads = createAdsServer({
    cache,
    logger: createLogger('control-plane-bench', { level: 'silent' }),
    registry: new Registry(),
  });
  const grpc = await startGrpcServer({ host: '127.0.0.1', port: 0, register: (server) => ads.register(server) });
  // A client (channel, HTTP/2 connection) per proxy, as every Envoy has its own connection.
  const clients: AggregatedDiscoveryServiceClient[] = [];
  const connect = () => {
    const client = new AggregatedDiscoveryServiceClient(`127.0.0.1:${grpc.port}`, credentials.createInsecure(), {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    });
    clients.push(client);
    return client;
  };
  const names = new Map<string, string[]>();
  const initial = compile(definition, baseDir);
  for (const [typeUrl, resources] of initial)
    names.set(
      typeUrl,
      resources.map((r) => r.name),
    );

  const fleet: SimulatedProxy[] = [];
  try {
    for (let i = 0; i < proxies; i += 1) fleet.push(new SimulatedProxy(connect(), `proxy-${i}`, names));
    await waitFor(
      () => fleet.every((p) => p.versions.has(typeUrls.route) || p.failed !== undefined),
      `${proxies} proxies to receive their first route configuration`,
    );
    const failed = fleet.find((p) => p.failed !== undefined);
    if (failed) throw new Error(`${failed.id}: ${failed.failed?.message}`);

    const samples: number[] = [];
    let bytes = 0;
    let resources = 0;
    for (let change = 0; change < changes; change += 1) {
      // One route changes: its timeout (a new value each change).
      const route = definition.routes[3];
      if (route === undefined) throw new Error('too few routes');
      Object.assign(route, { timeout: `${10 + change}s` });
      const next = compile(definition, baseDir);
      const before = new Map(fleet.map((p) => [p.id, p.versions.get(typeUrls.route)]));
      const arrived = new Map<string, number>();
      let start = 0;
      for (const proxy of fleet) {
        proxy.onResponse = (p, response) => {
          bytes += response.resources.reduce((sum, r) => sum + r.value.byteLength, 0);
          resources += response.resources.length;
          if (response.typeUrl === typeUrls.route && response.versionInfo !== before.get(p.id) && !arrived.has(p.id)) {
            arrived.set(p.id, performance.now() - start);
          }
        };
      }
      start = performance.now();
      cache.setSnapshot(next);
      await waitFor(() => arrived.size === fleet.length, `${proxies} proxies to converge (change ${change})`);
      samples.push(...arrived.values());
      // Let the ACKs land before the next change.
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const sorted = samples.sort((a, b) => a - b);
    const round = (v: number) => Math.round(v * 10) / 10;
    return {
      case: `convergence sotw ${proxies} proxies`,
      protocol: 'sotw',
      proxies,
      routes,
      changes,
      p50_ms: round(percentile(sorted, 50)),
      p99_ms: round(percentile(sorted, 99)),
      max_ms: round(sorted.at(-1) ?? Number.NaN),
      bytes_pushed_per_change: Math.round(bytes / changes),
      resources_pushed_per_change: Math.round(resources / changes),
    };
  } finally {
    for (const proxy of fleet) proxy.close();
    for (const client of clients) client.close();
    ads.close();
    await grpc.close(100);
  }
}
