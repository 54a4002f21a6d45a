// IR → the resources of one sidecar view (`sidecar:<service>`): its inbound and outbound
// listeners, their routes, the app's cluster and one cluster per service it may call. Pure:
// the workload's SDS Secrets are added by the view (xds/views.ts) from a WorkloadSecrets source.
import { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { calleesOf } from '../../ir/mesh';
import type { GatewayIR, MeshServiceIR } from '../../ir/types';
import type { Resource, ResourcesByType } from '../../xds/resources';
import { typeUrls } from '../../xds/type-urls';
import { type MessageCodec, pack } from '../any';
import { appCluster, inboundListener, inboundRoutes } from './inbound';
import { outboundClusters, outboundEndpoints, outboundListener, outboundRoutes } from './outbound';

export { sidecarNodeCluster, sidecarViewName } from './names';

export function translateSidecar(ir: GatewayIR, service: MeshServiceIR): ResourcesByType {
  if (!ir.mesh) throw new Error('translateSidecar needs a mesh');
  const callees = calleesOf(ir.mesh, service.name);
  const packed = <T>(codec: MessageCodec<T>, messages: T[], nameOf: (message: T) => string): Resource[] =>
    messages
      .map((message) => ({ name: nameOf(message), resource: pack(codec, message) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const byType: ResourcesByType = new Map();
  byType.set(
    typeUrls.cluster,
    packed(Cluster, [appCluster(service), ...outboundClusters(callees)], (c) => c.name),
  );
  byType.set(
    typeUrls.endpoint,
    packed(ClusterLoadAssignment, outboundEndpoints(callees), (cla) => cla.clusterName),
  );
  byType.set(typeUrls.secret, []);
  byType.set(
    typeUrls.listener,
    packed(Listener, [inboundListener(ir, service), outboundListener(ir, service)], (l) => l.name),
  );
  byType.set(
    typeUrls.route,
    packed(RouteConfiguration, [inboundRoutes(service), outboundRoutes(callees)], (r) => r.name),
  );
  return byType;
}
