// IR clusters → Envoy Clusters: service clusters (HTTP/1.1, health-checked) and the two
// policy-service clusters (gRPC, so HTTP/2). IP endpoints come over EDS so that scaling a
// service changes only its ClusterLoadAssignment; DNS names use STRICT_DNS.
import {
  Cluster,
  Cluster_DiscoveryType,
  Cluster_DnsLookupFamily,
} from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { HttpProtocolOptions } from '@sekisho/proto/envoy/extensions/upstreams/http/v3/http_protocol_options';
import type { ClusterIR, GatewayIR, OutlierDetectionIR } from '../ir/types';
import { pack } from './any';
import { durationFromMs } from './duration';
import { edgeLimits } from './edge';
import { loadAssignment } from './endpoints';
import { upstreamHttpProtocolOptionsName } from './filter-names';

export function translateClusters(ir: GatewayIR): Cluster[] {
  return ir.clusters.map(translateCluster);
}

function translateCluster(cluster: ClusterIR): Cluster {
  return Cluster.fromPartial({
    name: cluster.name,
    ...(cluster.discovery === 'eds'
      ? {
          type: Cluster_DiscoveryType.EDS,
          edsClusterConfig: { edsConfig: { ads: {}, resourceApiVersion: ApiVersion.V3 }, serviceName: cluster.name },
        }
      : {
          type: Cluster_DiscoveryType.STRICT_DNS,
          // IPv6 answers first (Envoy's AUTO) can leave a cluster unreachable where services only have IPv4.
          dnsLookupFamily: Cluster_DnsLookupFamily.V4_PREFERRED,
          loadAssignment: loadAssignment(cluster),
        }),
    connectTimeout: durationFromMs(cluster.connectTimeoutMs),
    perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
    healthChecks:
      cluster.healthCheckPath === undefined
        ? []
        : [
            {
              timeout: durationFromMs(1000),
              interval: durationFromMs(5000),
              unhealthyThreshold: 2,
              healthyThreshold: 1,
              httpHealthCheck: { path: cluster.healthCheckPath },
            },
          ],
    ...(cluster.outlierDetection === undefined ? {} : { outlierDetection: outlierDetection(cluster.outlierDetection) }),
    typedExtensionProtocolOptions:
      cluster.protocol === 'http2'
        ? {
            [upstreamHttpProtocolOptionsName]: pack(
              HttpProtocolOptions,
              HttpProtocolOptions.fromPartial({
                explicitHttpConfig: {
                  http2ProtocolOptions: {
                    initialStreamWindowSize: edgeLimits.http2.initialStreamWindowSize,
                    initialConnectionWindowSize: edgeLimits.http2.initialConnectionWindowSize,
                  },
                },
              }),
            ),
          }
        : {},
  });
}

function outlierDetection(input: OutlierDetectionIR) {
  return {
    ...(input.consecutive5xx === undefined ? {} : { consecutive5xx: input.consecutive5xx }),
    ...(input.consecutiveGatewayFailure === undefined
      ? {}
      : // Envoy counts gateway failures but only ejects on them when enforcement is on.
        { consecutiveGatewayFailure: input.consecutiveGatewayFailure, enforcingConsecutiveGatewayFailure: 100 }),
    ...(input.intervalMs === undefined ? {} : { interval: durationFromMs(input.intervalMs) }),
    ...(input.baseEjectionTimeMs === undefined ? {} : { baseEjectionTime: durationFromMs(input.baseEjectionTimeMs) }),
    ...(input.maxEjectionPercent === undefined ? {} : { maxEjectionPercent: input.maxEjectionPercent }),
  };
}
