// A sidecar's outbound side: a plaintext listener on loopback (127.0.0.1:<outboundPort>) where
// the app sends its calls to other mesh services by name. Only the services whose allow rules
// name this one are routed (one virtual host per callee, by every name Kubernetes DNS gives
// it, with and without the port); anything else gets a 404 from the sidecar, never a
// passthrough. Each callee's cluster reaches its sidecar over mutual TLS, requiring its SPIFFE
// id, with the definition's timeout, retries, outlier detection and circuit breakers for it.
import type { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import type { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import type { GatewayIR, MeshServiceIR } from '../../ir/types';
import { translateCluster } from '../clusters';
import { durationFromMs } from '../duration';
import { edgeLimits } from '../edge';
import { loadAssignment } from '../endpoints';
import { retryPolicy } from '../route-parts';
import { sidecarConnectionManager } from './connection-manager';
import { sidecarOutboundName } from './names';

export function outboundListener(ir: GatewayIR, service: MeshServiceIR): Listener {
  return Listener.fromPartial({
    name: sidecarOutboundName,
    address: { socketAddress: { address: '127.0.0.1', portValue: service.outboundPort } },
    perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
    filterChains: [
      {
        name: sidecarOutboundName,
        filters: [
          sidecarConnectionManager(ir, {
            statPrefix: sidecarOutboundName,
            routeConfigName: sidecarOutboundName,
            httpFilters: [],
            // The app is the only peer: its X-Forwarded-For (the end user's, forwarded) goes on unchanged.
            useRemoteAddress: false,
            skipXffAppend: true,
            preserveExternalRequestId: true,
          }),
        ],
      },
    ],
  });
}

/** `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`, each also with `:<port>`. */
export function calleeDomains(callee: MeshServiceIR): string[] {
  const names = [
    callee.name,
    `${callee.name}.${callee.namespace}`,
    `${callee.name}.${callee.namespace}.svc`,
    `${callee.name}.${callee.namespace}.svc.cluster.local`,
  ];
  return names.flatMap((name) => [name, `${name}:*`]);
}

export function outboundRoutes(callees: readonly MeshServiceIR[]): RouteConfiguration {
  return RouteConfiguration.fromPartial({
    name: sidecarOutboundName,
    virtualHosts: [
      ...callees.map((callee) => ({
        name: callee.name,
        domains: calleeDomains(callee),
        routes: [
          {
            match: { prefix: '/' },
            route: {
              cluster: callee.cluster.name,
              timeout: durationFromMs(callee.timeoutMs),
              retryPolicy: retryPolicy(callee.retries),
            },
          },
        ],
      })),
      {
        name: 'not_in_mesh',
        domains: ['*'],
        routes: [
          {
            match: { prefix: '/' },
            directResponse: {
              status: 404,
              body: { inlineString: 'no mesh service this workload may call has this name\n' },
            },
          },
        ],
      },
    ],
  });
}

export function outboundClusters(callees: readonly MeshServiceIR[]): Cluster[] {
  return callees.map((callee) => translateCluster(callee.cluster));
}

export function outboundEndpoints(callees: readonly MeshServiceIR[]): ClusterLoadAssignment[] {
  return callees.filter((callee) => callee.cluster.discovery === 'eds').map((callee) => loadAssignment(callee.cluster));
}
