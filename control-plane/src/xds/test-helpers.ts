// Shared by the xDS tests: hand-built Envoy resources (valid for a real Envoy), a
// grpc-js ADS client that queues responses, and a log capture. Not used at run time.
import { type ClientDuplexStream, credentials, type ServiceError } from '@grpc/grpc-js';
import { type EnvoyHandle, startEnvoy } from '@sekisho/devstack/envoy';
import { Cluster, Cluster_DiscoveryType } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import { HttpConnectionManager } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { AggregatedDiscoveryServiceClient } from '@sekisho/proto/envoy/service/discovery/v3/ads';
import {
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  DiscoveryRequest,
  type DiscoveryResponse,
} from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger, type Logger } from '@sekisho/service-kit/logger';
import { Registry } from 'prom-client';
import { SnapshotCache } from './cache';
import type { Resource, ResourcesByType } from './resources';
import { type AdsServer, createAdsServer } from './server';
import { typeUrls } from './type-urls';

const pack = (typeUrl: string, value: Uint8Array): Any => ({ typeUrl, value: Buffer.from(value) });
const ads = { ads: {}, resourceApiVersion: ApiVersion.V3 };

export function edsCluster(name: string, connectTimeoutMs = 1_000): Resource {
  const cluster = Cluster.fromPartial({
    name,
    type: Cluster_DiscoveryType.EDS,
    edsClusterConfig: { edsConfig: ads },
    connectTimeout: { seconds: Math.floor(connectTimeoutMs / 1000), nanos: (connectTimeoutMs % 1000) * 1_000_000 },
  });
  return { name, resource: pack(typeUrls.cluster, Cluster.encode(cluster).finish()) };
}

export function loadAssignment(clusterName: string, endpoints: Array<{ host: string; port: number }>): Resource {
  const cla = ClusterLoadAssignment.fromPartial({
    clusterName,
    endpoints: [
      {
        lbEndpoints: endpoints.map(({ host, port }) => ({
          endpoint: { address: { socketAddress: { address: host, portValue: port } } },
        })),
      },
    ],
  });
  return { name: clusterName, resource: pack(typeUrls.endpoint, ClusterLoadAssignment.encode(cla).finish()) };
}

export function httpListener(name: string, port: number, routeConfigName: string): Resource {
  const hcm = HttpConnectionManager.fromPartial({
    statPrefix: name,
    rds: { configSource: ads, routeConfigName },
    httpFilters: [
      {
        name: 'envoy.filters.http.router',
        typedConfig: pack(
          'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
          Router.encode(Router.fromPartial({})).finish(),
        ),
      },
    ],
  });
  const listener = Listener.fromPartial({
    name,
    address: { socketAddress: { address: '127.0.0.1', portValue: port } },
    filterChains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typedConfig: pack(
              'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              HttpConnectionManager.encode(hcm).finish(),
            ),
          },
        ],
      },
    ],
  });
  return { name, resource: pack(typeUrls.listener, Listener.encode(listener).finish()) };
}

/** A route configuration sending everything to `cluster`, tagging responses with `x-route-tag`. */
export function routeTo(name: string, cluster: string, tag = 'v1'): Resource {
  const rc = RouteConfiguration.fromPartial({
    name,
    virtualHosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }],
    responseHeadersToAdd: [{ header: { key: 'x-route-tag', value: tag } }],
  });
  return { name, resource: pack(typeUrls.route, RouteConfiguration.encode(rc).finish()) };
}

/** An SDS Secret whose certificate text is `certificate` (the server never parses it). */
export function tlsSecret(name: string, certificate: string): Resource {
  const secret = Secret.fromPartial({
    name,
    tlsCertificate: { certificateChain: { inlineString: certificate }, privateKey: { inlineString: 'key' } },
  });
  return { name, resource: { typeUrl: typeUrls.secret, value: Buffer.from(Secret.encode(secret).finish()) } };
}

export function resourcesOf(...resources: Resource[]): ResourcesByType {
  const byType: ResourcesByType = new Map();
  for (const r of resources) {
    const list = byType.get(r.resource.typeUrl) ?? [];
    list.push(r);
    byType.set(r.resource.typeUrl, list);
  }
  return byType;
}

/** Names of the resources in a response, decoded by type. */
export function namesIn(response: DiscoveryResponse): string[] {
  return response.resources.map((any) => {
    switch (any.typeUrl) {
      case typeUrls.cluster:
        return Cluster.decode(any.value).name;
      case typeUrls.endpoint:
        return ClusterLoadAssignment.decode(any.value).clusterName;
      case typeUrls.listener:
        return Listener.decode(any.value).name;
      case typeUrls.route:
        return RouteConfiguration.decode(any.value).name;
      case typeUrls.secret:
        return Secret.decode(any.value).name;
      default:
        return any.typeUrl;
    }
  });
}

/**
 * Responses of one real grpc-js stream, queued until read: what the SotW and delta test
 * streams share (reading, waiting, the end of the stream).
 */
class ResponseQueue<Request, Response> {
  private readonly queue: Response[] = [];
  private readonly waiters: Array<(r: Response) => void> = [];
  ended?: ServiceError | 'ok';

  constructor(
    stream: ClientDuplexStream<Request, Response>,
    private readonly kind: string,
    private readonly describe: (r: Response) => string,
  ) {
    stream.on('data', (response: Response) => {
      const waiter = this.waiters.shift();
      if (waiter) waiter(response);
      else this.queue.push(response);
    });
    stream.on('error', (error: ServiceError) => {
      this.ended = error;
    });
    stream.on('end', () => {
      this.ended ??= 'ok';
    });
  }

  next(timeoutMs = 3_000): Promise<Response> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`no ${this.kind} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (r: Response) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.waiters.push(waiter);
    });
  }

  /** Resolves when no response arrives for `ms`; rejects with the response otherwise. */
  async expectNothing(ms = 300): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    const stray = this.queue.shift();
    if (stray) throw new Error(`unexpected response: ${this.describe(stray)}`);
  }
}

/** One ADS stream from a real grpc-js client; responses queue until read. */
export class AdsTestStream extends ResponseQueue<DiscoveryRequest, DiscoveryResponse> {
  readonly call: ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;

  constructor(client: AggregatedDiscoveryServiceClient) {
    const call = client.streamAggregatedResources();
    super(call, 'DiscoveryResponse', (r) => `${r.typeUrl} version ${r.versionInfo} nonce ${r.nonce}`);
    this.call = call;
  }

  send(request: Partial<DiscoveryRequest> & { typeUrl: string }, nodeId?: string, cluster = 'test'): void {
    this.call.write(
      DiscoveryRequest.fromPartial({
        ...request,
        ...(nodeId ? { node: Node.fromPartial({ id: nodeId, cluster }) } : {}),
      }),
    );
  }

  /** ACKs `response` (same names unless given). */
  ack(response: DiscoveryResponse, resourceNames: string[] = []): void {
    this.send({
      typeUrl: response.typeUrl,
      versionInfo: response.versionInfo,
      responseNonce: response.nonce,
      resourceNames,
    });
  }

  cancel(): void {
    this.call.cancel();
  }
}

/** One delta ADS stream from a real grpc-js client; responses queue until read. */
export class DeltaTestStream extends ResponseQueue<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
  readonly call: ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

  constructor(client: AggregatedDiscoveryServiceClient) {
    const call = client.deltaAggregatedResources();
    super(call, 'DeltaDiscoveryResponse', (r) => `${r.typeUrl} version ${r.systemVersionInfo}`);
    this.call = call;
  }

  send(request: Partial<DeltaDiscoveryRequest> & { typeUrl: string }, node?: Partial<Node>): void {
    this.call.write(DeltaDiscoveryRequest.fromPartial({ ...request, ...(node ? { node } : {}) }));
  }

  ack(response: DeltaDiscoveryResponse): void {
    this.send({ typeUrl: response.typeUrl, responseNonce: response.nonce });
  }

  nack(response: DeltaDiscoveryResponse, message: string): void {
    this.send({
      typeUrl: response.typeUrl,
      responseNonce: response.nonce,
      errorDetail: { code: 3, message, details: [] },
    });
  }

  cancel(): void {
    this.call.cancel();
  }
}

/** Name → version of the resources of a delta response. */
export const deltaVersions = (response: DeltaDiscoveryResponse): Record<string, string> =>
  Object.fromEntries(response.resources.map((r) => [r.name, r.version]));

export function adsClient(port: number): AggregatedDiscoveryServiceClient {
  return new AggregatedDiscoveryServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
}

export interface LogRecord {
  level: string;
  message: string;
  [key: string]: unknown;
}

/** A real pino logger whose JSON records land in `records`. */
export function captureLogger(level = 'debug'): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const logger = createLogger('control-plane-test', {
    level,
    destination: { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) },
  });
  return { logger, records };
}

export async function eventually<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 5_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A small valid gateway definition (YAML) for tests of the watcher and main. `to` names
 * the service both routes go to, so `to: 'nosuchservice'` makes both invalid.
 */
export const testDefinitionYaml = ({ port = 3001, to = 'customer' } = {}) => `
listeners:
  http: { port: 18080 }
identity:
  firebase: { projectId: demo-salon }
  groupClaim: tier
  groups:
    basic_customer: ['read:own_profile']
policyServices:
  extAuthz: { address: '127.0.0.1:19001' }
  rateLimit: { address: '127.0.0.1:19002' }
services:
  customer: { endpoints: ['127.0.0.1:${port}'] }
routes:
  - match: 'GET /api/v1/customer/profile'
    to: ${to}
    rewrite: /profile
    require: ['read:own_profile']
  - match: 'GET /api/v1/customer/bookings'
    to: ${to}
`;

export interface AdsWithEnvoy {
  cache: SnapshotCache;
  registry: Registry;
  ads: AdsServer;
  grpc: GrpcServer;
  envoy: EnvoyHandle;
  close(): Promise<void>;
}

/**
 * The control plane's ADS side in-process (cache, server, gRPC) serving `resources` to a
 * real Envoy started from the project's bootstrap, which knows only the ADS address.
 */
export async function serveToRealEnvoy(
  nodeId: string,
  resources: ResourcesByType,
  opts: { adsApiType?: 'GRPC' | 'DELTA_GRPC'; clusterDrainMs?: number } = {},
): Promise<AdsWithEnvoy> {
  const cache = new SnapshotCache();
  cache.setSnapshot(resources);
  const registry = new Registry();
  const ads = createAdsServer({
    cache,
    logger: captureLogger('info').logger,
    registry,
    ...(opts.clusterDrainMs === undefined ? {} : { clusterDrainMs: opts.clusterDrainMs }),
  });
  const grpc = await startGrpcServer({ port: 0, register: (s) => ads.register(s) });
  let envoy: EnvoyHandle;
  try {
    envoy = await startEnvoy({
      nodeId,
      cluster: 'sekisho-test',
      controlPlane: { host: '127.0.0.1', port: grpc.port },
      adminPort: 0,
      concurrency: 1,
      adsApiType: opts.adsApiType,
    });
  } catch (error) {
    ads.close();
    await grpc.close(100);
    throw error;
  }
  return {
    cache,
    registry,
    ads,
    grpc,
    envoy,
    close: async () => {
      await envoy.stop();
      ads.close();
      await grpc.close(100);
    },
  };
}
