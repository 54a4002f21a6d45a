// IR clusters → Envoy Clusters: service clusters (HTTP/1.1 or HTTP/2, TLS, health checks,
// outlier detection, circuit breakers, load balancing) and the two policy-service clusters
// (gRPC, so HTTP/2, with gRPC health checks). IP endpoints come over EDS so that scaling a
// service changes only its ClusterLoadAssignment; DNS names use STRICT_DNS.
import {
  Cluster,
  Cluster_DiscoveryType,
  Cluster_DnsLookupFamily,
  Cluster_LbPolicy,
} from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { RoutingPriority } from '@sekisho/proto/envoy/config/core/v3/base';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import {
  SubjectAltNameMatcher_SanType,
  TlsParameters_TlsProtocol,
} from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/common';
import { UpstreamTlsContext } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import { HttpProtocolOptions } from '@sekisho/proto/envoy/extensions/upstreams/http/v3/http_protocol_options';
import type {
  CircuitBreakersIR,
  ClusterIR,
  GatewayIR,
  HealthCheckIR,
  OutlierDetectionIR,
  UpstreamTlsIR,
} from '../ir/types';
import { pack } from './any';
import { durationFromMs } from './duration';
import { edgeLimits } from './edge';
import { loadAssignment } from './endpoints';
import { upstreamHttpProtocolOptionsName, upstreamTlsTransportSocketName } from './filter-names';
import { meshUpstreamTls } from './sidecar/mtls';

export function translateClusters(ir: GatewayIR): Cluster[] {
  return ir.clusters.map(translateCluster);
}

export function translateCluster(cluster: ClusterIR): Cluster {
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
    healthChecks: cluster.healthCheck === undefined ? [] : [healthCheck(cluster.healthCheck)],
    ...(cluster.outlierDetection === undefined ? {} : { outlierDetection: outlierDetection(cluster.outlierDetection) }),
    ...(cluster.circuitBreakers === undefined ? {} : { circuitBreakers: circuitBreakers(cluster.circuitBreakers) }),
    lbPolicy: lbPolicies[cluster.loadBalancing.policy],
    ...(cluster.tls === undefined ? {} : { transportSocket: transportSocket(cluster.tls, cluster.protocol) }),
    ...(cluster.meshPeer === undefined ? {} : { transportSocket: meshUpstreamTls(cluster.meshPeer, cluster.protocol) }),
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

const lbPolicies = {
  roundRobin: Cluster_LbPolicy.ROUND_ROBIN,
  leastRequest: Cluster_LbPolicy.LEAST_REQUEST,
  random: Cluster_LbPolicy.RANDOM,
  ringHash: Cluster_LbPolicy.RING_HASH,
  maglev: Cluster_LbPolicy.MAGLEV,
} as const;

function healthCheck(input: HealthCheckIR) {
  return {
    timeout: durationFromMs(input.timeoutMs),
    interval: durationFromMs(input.intervalMs),
    // Envoy probes a cluster that has had no traffic only every 60s by default; the policy
    // services' gRPC calls do not count as traffic, so a dead replica would go unnoticed.
    noTrafficInterval: durationFromMs(input.intervalMs),
    unhealthyThreshold: input.unhealthyThreshold,
    healthyThreshold: input.healthyThreshold,
    ...(input.kind === 'grpc'
      ? { grpcHealthCheck: {} }
      : {
          httpHealthCheck: {
            path: input.path,
            // Envoy's ranges are half-open: [status, status + 1).
            expectedStatuses: input.expectedStatuses.map((status) => ({ start: status, end: status + 1 })),
          },
        }),
  };
}

/** Envoy names most of these after the definition's keys; durations become Durations. */
function outlierDetection(input: OutlierDetectionIR) {
  const { intervalMs, baseEjectionTimeMs, maxEjectionTimeMs, ...counts } = input;
  const localOrigin =
    input.consecutiveLocalOriginFailure !== undefined ||
    input.enforcingConsecutiveLocalOriginFailure !== undefined ||
    input.enforcingLocalOriginSuccessRate !== undefined ||
    input.enforcingFailurePercentageLocalOrigin !== undefined;
  return {
    ...counts,
    ...(intervalMs === undefined ? {} : { interval: durationFromMs(intervalMs) }),
    ...(baseEjectionTimeMs === undefined ? {} : { baseEjectionTime: durationFromMs(baseEjectionTimeMs) }),
    ...(maxEjectionTimeMs === undefined ? {} : { maxEjectionTime: durationFromMs(maxEjectionTimeMs) }),
    // Local-origin failures (refused connections, timeouts) are only counted apart when split.
    ...(localOrigin ? { splitExternalLocalOriginErrors: true } : {}),
  };
}

function circuitBreakers(input: CircuitBreakersIR) {
  const { retryBudget, ...limits } = input;
  return {
    thresholds: [
      {
        priority: RoutingPriority.DEFAULT,
        ...limits,
        ...(retryBudget === undefined
          ? {}
          : {
              retryBudget: {
                budgetPercent: { value: retryBudget.percent },
                minRetryConcurrency: retryBudget.minRetryConcurrency,
              },
            }),
      },
    ],
  };
}

/** TLS to the service, verifying its certificate chain against caFile and its name against sni. */
function transportSocket(tls: UpstreamTlsIR, protocol: ClusterIR['protocol']) {
  const context = UpstreamTlsContext.fromPartial({
    sni: tls.sni,
    commonTlsContext: {
      alpnProtocols: protocol === 'http2' ? ['h2'] : ['http/1.1'],
      tlsParams: { tlsMinimumProtocolVersion: TlsParameters_TlsProtocol.TLSv1_2 },
      tlsCertificates:
        tls.clientCertificate === undefined
          ? []
          : [
              {
                certificateChain: { filename: tls.clientCertificate.certFile },
                privateKey: { filename: tls.clientCertificate.keyFile },
              },
            ],
      validationContext: {
        trustedCa: { filename: tls.caFile },
        matchTypedSubjectAltNames: [{ sanType: SubjectAltNameMatcher_SanType.DNS, matcher: { exact: tls.sni } }],
      },
    },
  });
  return { name: upstreamTlsTransportSocketName, typedConfig: pack(UpstreamTlsContext, context) };
}
