// An independent xDS client: proxyless gRPC (@grpc/grpc-js-xds) resolves `xds:///greeter.test`
// through the control plane's ADS server (listener with an API listener → routes → cluster →
// endpoints, the resources gRFC A27 reads), then calls a real gRPC server at the endpoint.
// When the endpoints move, the client follows. A second implementation of the protocol,
// other than Envoy, accepting what the server sends.
import { credentials, Metadata } from '@grpc/grpc-js';
import { register as registerXdsResolver } from '@grpc/grpc-js-xds';
import { Cluster, Cluster_DiscoveryType, Cluster_LbPolicy } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import { HttpConnectionManager } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import { HealthCheckResponse_ServingStatus, HealthClient } from '@sekisho/proto/grpc/health/v1/health';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import type { Resource } from './resources';
import { type AdsServer, createAdsServer } from './server';
import { captureLogger, eventually, resourcesOf } from './test-helpers';
import { typeUrls } from './type-urls';

const ads = { ads: {}, resourceApiVersion: ApiVersion.V3 };
const pack = (typeUrl: string, value: Uint8Array): Any => ({ typeUrl, value: Buffer.from(value) });
const hcmType = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

/** What a proxyless gRPC client needs for `xds:///<authority>`: the four resources of gRFC A27. */
function grpcService(authority: string, port: number): Resource[] {
  const hcm = HttpConnectionManager.fromPartial({
    rds: { configSource: ads, routeConfigName: `${authority}-routes` },
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
    name: authority,
    apiListener: { apiListener: pack(hcmType, HttpConnectionManager.encode(hcm).finish()) },
  });
  const routes = RouteConfiguration.fromPartial({
    name: `${authority}-routes`,
    virtualHosts: [
      {
        name: authority,
        domains: [authority],
        routes: [{ match: { prefix: '' }, route: { cluster: `${authority}-cluster` } }],
      },
    ],
  });
  const cluster = Cluster.fromPartial({
    name: `${authority}-cluster`,
    type: Cluster_DiscoveryType.EDS,
    edsClusterConfig: { edsConfig: ads },
    lbPolicy: Cluster_LbPolicy.ROUND_ROBIN,
  });
  const endpoints = ClusterLoadAssignment.fromPartial({
    clusterName: `${authority}-cluster`,
    endpoints: [
      {
        // gRPC ignores a locality without a weight.
        locality: { region: 'local' },
        loadBalancingWeight: 1,
        lbEndpoints: [{ endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: port } } } }],
      },
    ],
  });
  return [
    { name: listener.name, resource: pack(typeUrls.listener, Listener.encode(listener).finish()) },
    { name: routes.name, resource: pack(typeUrls.route, RouteConfiguration.encode(routes).finish()) },
    { name: cluster.name, resource: pack(typeUrls.cluster, Cluster.encode(cluster).finish()) },
    {
      name: endpoints.clusterName,
      resource: pack(typeUrls.endpoint, ClusterLoadAssignment.encode(endpoints).finish()),
    },
  ];
}

describe('proxyless gRPC (@grpc/grpc-js-xds) through the control plane', () => {
  const cache = new SnapshotCache();
  let server: AdsServer;
  let xds: GrpcServer;
  const backends: Array<{ server: GrpcServer; serving: boolean }> = [];
  let client: HealthClient | undefined;

  beforeAll(async () => {
    // Two real gRPC servers whose health answers tell them apart: the first SERVING, the second NOT_SERVING.
    for (const serving of [true, false]) {
      const backend = { serving, server: undefined as unknown as GrpcServer };
      backend.server = await startGrpcServer({
        port: 0,
        register: () => {},
        isServing: () => backend.serving,
        transport: 'grpc-js',
      });
      backends.push(backend);
    }
    cache.setSnapshot(resourcesOf(...grpcService('greeter.test', backends[0]?.server.port ?? 0)));
    server = createAdsServer({ cache, logger: captureLogger('info').logger, registry: new Registry() });
    xds = await startGrpcServer({ port: 0, register: (s) => server.register(s) });
    // The client's bootstrap (gRFC A27): the control plane's address, this node, insecure channel.
    process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
      xds_servers: [
        { server_uri: `127.0.0.1:${xds.port}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
      ],
      node: { id: 'proxyless-test', cluster: 'sekisho-proxyless', locality: {} },
    });
    registerXdsResolver();
  });

  afterAll(async () => {
    client?.close();
    server?.close();
    await xds?.close(100);
    for (const b of backends) await b.server.close(100);
  });

  const check = () =>
    new Promise<HealthCheckResponse_ServingStatus>((resolve, reject) => {
      client?.check({ service: '' }, new Metadata(), { deadline: Date.now() + 5_000 }, (error, response) =>
        error ? reject(error) : resolve(response.status),
      );
    });

  it('resolves xds:///greeter.test through the control plane and calls the endpoint it names', async () => {
    client = new HealthClient('xds:///greeter.test', credentials.createInsecure());
    expect(await eventually(async () => check().catch(() => undefined), 15_000, 'a call over xds')).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
    const node = server.status().find((s) => s.nodeId === 'proxyless-test');
    // The client ACKed every type it asked for, at the snapshot's versions.
    for (const type of [typeUrls.listener, typeUrls.route, typeUrls.cluster, typeUrls.endpoint]) {
      expect(node?.types[type]?.ackedVersion).toBe(cache.get(type)?.version);
    }
  });

  it('follows the endpoints when they move to another server', async () => {
    cache.setSnapshot(resourcesOf(...grpcService('greeter.test', backends[1]?.server.port ?? 0)));
    expect(
      await eventually(
        async () =>
          (await check().catch(() => undefined)) === HealthCheckResponse_ServingStatus.NOT_SERVING ? true : undefined,
        15_000,
        'calls reaching the second server',
      ),
    ).toBe(true);
  });
});
