// IR → every resource the control plane serves, packed and grouped by type URL. Pure and
// deterministic: the same IR always gives byte-identical resources, so the snapshot cache
// can version them by content hash.

import { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { policyResourceNames } from '@sekisho/service-kit/contract';
import type { GatewayIR } from '../ir/types';
import type { Resource, ResourcesByType } from '../xds/resources';
import { pushOrder, typeUrls } from '../xds/type-urls';
import { type MessageCodec, pack, typeUrlOf } from './any';
import { translateClusters } from './clusters';
import { translateEndpoints } from './endpoints';
import { withHttpsRedirect } from './https-redirect';
import { translateListeners } from './listeners';
import { translateAuthzPolicy, translateRateLimitPolicy } from './policy';
import { translateRoutes } from './routes';
import { translateSecrets } from './tls';

export function translate(ir: GatewayIR): ResourcesByType {
  const byType: ResourcesByType = new Map(pushOrder.map((typeUrl) => [typeUrl, []]));
  const add = <T>(codec: MessageCodec<T>, typeUrl: string, messages: T[], nameOf: (message: T) => string) => {
    // The registry and the xDS type URLs must agree, or Envoy would reject every resource.
    if (typeUrlOf(codec) !== typeUrl) throw new Error(`type URL mismatch: ${typeUrlOf(codec)} vs ${typeUrl}`);
    const resources: Resource[] = messages
      .map((message) => ({ name: nameOf(message), resource: pack(codec, message) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    byType.set(typeUrl, resources);
  };

  add(Cluster, typeUrls.cluster, translateClusters(ir), (cluster) => cluster.name);
  add(ClusterLoadAssignment, typeUrls.endpoint, translateEndpoints(ir), (cla) => cla.clusterName);
  add(Secret, typeUrls.secret, translateSecrets(ir), (secret) => secret.name);
  add(Listener, typeUrls.listener, translateListeners(ir), (listener) => listener.name);
  add(RouteConfiguration, typeUrls.route, withHttpsRedirect(ir, translateRoutes(ir)), (routes) => routes.name);
  add(AuthzPolicy, typeUrls.authzPolicy, [translateAuthzPolicy(ir)], () => policyResourceNames.authz);
  add(RateLimitPolicy, typeUrls.rateLimitPolicy, [translateRateLimitPolicy(ir)], () => policyResourceNames.rateLimit);
  return byType;
}
