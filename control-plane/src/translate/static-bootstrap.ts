// The compiled resources as one static Envoy bootstrap: routes inlined into the HTTP
// connection manager instead of RDS, EDS clusters made STATIC with their endpoints inline,
// SDS secrets made static (the TLS contexts name them without a config source).
// Encoded as binary protobuf (write it to a `.pb` file), the same bytes Envoy gets over
// xDS. Used to prove with `envoy --mode validate` that Envoy accepts what we generate.
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Cluster, Cluster_DiscoveryType } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { HttpConnectionManager } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import {
  type CommonTlsContext,
  DownstreamTlsContext,
  UpstreamTlsContext,
} from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import type { ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { encode, pack, unpack } from './any';
import { httpConnectionManagerName, tlsTransportSocketName } from './filter-names';

function decodeAll<T>(resources: ResourcesByType, typeUrl: string, codec: { decode(bytes: Uint8Array): T }): T[] {
  return (resources.get(typeUrl) ?? []).map((resource) => codec.decode(resource.resource.value));
}

/** SDS secrets by name only: the static ones of the bootstrap (certificates and the mesh's trust bundle). */
function staticSds(common: CommonTlsContext | undefined): void {
  for (const sds of common?.tlsCertificateSdsSecretConfigs ?? []) sds.sdsConfig = undefined;
  const validation = common?.combinedValidationContext?.validationContextSdsSecretConfig;
  if (validation) validation.sdsConfig = undefined;
}

/** Envoy's Bootstrap { static_resources = 2 { listeners = 1; clusters = 2; secrets = 3 } }, encoded by hand. */
export function staticBootstrap(resources: ResourcesByType): Uint8Array {
  const routes = new Map(
    decodeAll(resources, typeUrls.route, RouteConfiguration).map((route) => [route.name, route] as const),
  );
  const assignments = new Map(
    decodeAll(resources, typeUrls.endpoint, ClusterLoadAssignment).map((cla) => [cla.clusterName, cla] as const),
  );

  const listeners = decodeAll(resources, typeUrls.listener, Listener).map((listener) => {
    for (const chain of listener.filterChains) {
      for (const filter of chain.filters) {
        if (filter.name !== httpConnectionManagerName || filter.typedConfig === undefined) continue;
        const hcm = unpack(HttpConnectionManager, filter.typedConfig);
        const routeConfig = hcm.rds && routes.get(hcm.rds.routeConfigName);
        if (routeConfig === undefined) throw new Error(`listener ${listener.name}: no route config for its RDS name`);
        filter.typedConfig = pack(HttpConnectionManager, { ...hcm, rds: undefined, routeConfig });
      }
      const socket = chain.transportSocket;
      if (socket?.name === tlsTransportSocketName && socket.typedConfig !== undefined) {
        const tls = unpack(DownstreamTlsContext, socket.typedConfig);
        staticSds(tls.commonTlsContext);
        socket.typedConfig = pack(DownstreamTlsContext, tls);
      }
    }
    return listener;
  });

  const clusters = decodeAll(resources, typeUrls.cluster, Cluster).map((cluster) => {
    const socket = cluster.transportSocket;
    if (socket?.typedConfig?.typeUrl.endsWith('.UpstreamTlsContext')) {
      const tls = unpack(UpstreamTlsContext, socket.typedConfig);
      staticSds(tls.commonTlsContext);
      socket.typedConfig = pack(UpstreamTlsContext, tls);
    }
    if (cluster.type !== Cluster_DiscoveryType.EDS) return cluster;
    const loadAssignment = assignments.get(cluster.edsClusterConfig?.serviceName ?? cluster.name);
    if (loadAssignment === undefined) throw new Error(`cluster ${cluster.name}: no ClusterLoadAssignment`);
    return { ...cluster, type: Cluster_DiscoveryType.STATIC, edsClusterConfig: undefined, loadAssignment };
  });

  const staticResources = new BinaryWriter();
  for (const listener of listeners) staticResources.uint32((1 << 3) | 2).bytes(encode(Listener, listener));
  for (const cluster of clusters) staticResources.uint32((2 << 3) | 2).bytes(encode(Cluster, cluster));
  for (const secret of decodeAll(resources, typeUrls.secret, Secret)) {
    staticResources.uint32((3 << 3) | 2).bytes(encode(Secret, secret));
  }
  return new BinaryWriter()
    .uint32((2 << 3) | 2)
    .bytes(staticResources.finish())
    .finish();
}
