// IR → the resources of one sidecar view (`sidecar:<service>`): its inbound and outbound
// listeners, their routes, the app's cluster, one cluster per service it may call, and the
// policy services its own routes need (ext-authz, the rate-limit service). Pure:
// the workload's SDS Secrets are added by the view (xds/views.ts) from a WorkloadSecrets source.
import { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { calleesOf } from '../../ir/mesh';
import type { ClusterIR, GatewayIR, MeshServiceIR } from '../../ir/types';
import type { Resource, ResourcesByType } from '../../xds/resources';
import { typeUrls } from '../../xds/type-urls';
import { type MessageCodec, pack } from '../any';
import { translateCluster } from '../clusters';
import { loadAssignment } from '../endpoints';
import { appCluster, inboundListener, inboundRoutes } from './inbound';
import { outboundClusters, outboundEndpoints, outboundListener, outboundRoutes } from './outbound';

export { sidecarNodeCluster } from './names';

export function translateSidecar(ir: GatewayIR, service: MeshServiceIR): ResourcesByType {
  if (!ir.mesh) throw new Error('translateSidecar needs a mesh');
  const callees = calleesOf(ir.mesh, service.name);
  const packed = <T>(codec: MessageCodec<T>, messages: T[], nameOf: (message: T) => string): Resource[] =>
    messages
      .map((message) => ({ name: nameOf(message), resource: pack(codec, message) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const policyClusters = policyServiceClusters(ir, service);
  const byType: ResourcesByType = new Map();
  byType.set(
    typeUrls.cluster,
    packed(
      Cluster,
      [appCluster(service), ...policyClusters.map(translateCluster), ...outboundClusters(callees)],
      (c) => c.name,
    ),
  );
  byType.set(
    typeUrls.endpoint,
    packed(
      ClusterLoadAssignment,
      [
        ...policyClusters.filter((cluster) => cluster.discovery === 'eds').map(loadAssignment),
        ...outboundEndpoints(callees),
      ],
      (cla) => cla.clusterName,
    ),
  );
  byType.set(typeUrls.secret, []);
  byType.set(
    typeUrls.listener,
    packed(Listener, [inboundListener(ir, service), outboundListener(ir, service)], (l) => l.name),
  );
  byType.set(
    typeUrls.route,
    packed(RouteConfiguration, [inboundRoutes(ir, service), outboundRoutes(callees)], (r) => r.name),
  );
  return byType;
}

/** ext-authz when the service has routes of its own, the rate-limit service when they have limits. */
function policyServiceClusters(ir: GatewayIR, service: MeshServiceIR): ClusterIR[] {
  if (service.routes.length === 0) return [];
  const names = [ir.extAuthz.clusterName];
  if (service.routes.some((route) => route.limits.length > 0)) names.push(ir.rateLimit.clusterName);
  return names.map((name) => {
    const cluster = ir.clusters.find((candidate) => candidate.name === name);
    if (cluster === undefined) throw new Error(`no cluster ${name}`);
    return cluster;
  });
}
