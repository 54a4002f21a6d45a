// IR clusters discovered over EDS → their ClusterLoadAssignments.
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import type { ClusterIR, GatewayIR } from '../ir/types';

export function translateEndpoints(ir: GatewayIR): ClusterLoadAssignment[] {
  return ir.clusters.filter((cluster) => cluster.discovery === 'eds').map(loadAssignment);
}

/** Also used inline by STRICT_DNS clusters. */
export function loadAssignment(cluster: ClusterIR): ClusterLoadAssignment {
  return ClusterLoadAssignment.fromPartial({
    clusterName: cluster.name,
    endpoints: [
      {
        lbEndpoints: cluster.endpoints.map((endpoint) => ({
          endpoint: { address: { socketAddress: { address: endpoint.host, portValue: endpoint.port } } },
        })),
      },
    ],
  });
}
