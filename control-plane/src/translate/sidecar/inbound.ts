// A sidecar's inbound side: the mTLS listener in front of the app (0.0.0.0:<inboundPort>), its
// routes (everything to the app) and the app's loopback cluster.
//
// Trust: every connection here presented a certificate of the mesh's CA (mtls.ts), and the RBAC
// filter (rbac.ts) lets through only the callers the definition allows. So the end user's
// identity headers (x-sekisho-*) a request carries were set by the ingress's ext-authz and
// forwarded by a verified workload, and are kept: stripping them is the ingress's job, at the
// edge, where requests from outside the mesh arrive. Nothing outside the mesh can reach this
// listener without a mesh certificate.
//
// Client address: the peer is always a mesh workload, so the rightmost X-Forwarded-For entry is
// believed (xff_num_trusted_hops 1): the end user's address as the ingress appended it, or as a
// calling app forwarded it. The sidecar appends nothing (skip_xff_append), so the end user's
// address stays the rightmost entry for the next hop too, and x-request-id from the peer is
// kept (one id across every hop's access log).
import {
  Cluster,
  Cluster_DiscoveryType,
  Cluster_DnsLookupFamily,
} from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import type { GatewayIR, MeshServiceIR } from '../../ir/types';
import { translateCluster } from '../clusters';
import { durationFromMs } from '../duration';
import { edgeLimits } from '../edge';
import { sidecarConnectionManager } from './connection-manager';
import { meshDownstreamTls } from './mtls';
import { sidecarAppClusterName, sidecarInboundName } from './names';
import { meshRbacFilter } from './rbac';

export function inboundListener(ir: GatewayIR, service: MeshServiceIR): Listener {
  return Listener.fromPartial({
    name: sidecarInboundName,
    address: { socketAddress: { address: '0.0.0.0', portValue: service.inboundPort } },
    perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
    filterChains: [
      {
        name: sidecarInboundName,
        filters: [
          sidecarConnectionManager(ir, {
            statPrefix: sidecarInboundName,
            routeConfigName: sidecarInboundName,
            httpFilters: [meshRbacFilter(service)],
            useRemoteAddress: true,
            xffNumTrustedHops: 1,
            skipXffAppend: true,
            preserveExternalRequestId: true,
          }),
        ],
        transportSocket: meshDownstreamTls(),
      },
    ],
  });
}

export function inboundRoutes(service: MeshServiceIR): RouteConfiguration {
  return RouteConfiguration.fromPartial({
    name: sidecarInboundName,
    virtualHosts: [
      {
        name: 'app',
        domains: ['*'],
        routes: [
          {
            match: { prefix: '/' },
            // No retries here: the caller's sidecar (or the ingress) decides those.
            route: { cluster: sidecarAppClusterName, timeout: durationFromMs(service.timeoutMs) },
          },
        ],
      },
    ],
    // What Envoy's routing decision needs is in the route; the app sees the headers as sent.
    validateClusters: false,
  });
}

/**
 * The app on loopback: the service's protocol, connect timeout, health check and circuit
 * breakers (outlier detection would only eject the one local endpoint).
 */
export function appCluster(service: MeshServiceIR): Cluster {
  const cluster = translateCluster({
    ...service.cluster,
    name: sidecarAppClusterName,
    discovery: 'dns',
    endpoints: [{ host: '127.0.0.1', port: service.appPort }],
    tls: undefined,
    meshPeer: undefined,
    outlierDetection: undefined,
    loadBalancing: { policy: 'roundRobin', hashOn: undefined },
  });
  return Cluster.fromPartial({
    ...cluster,
    type: Cluster_DiscoveryType.STATIC,
    dnsLookupFamily: Cluster_DnsLookupFamily.AUTO,
  });
}
