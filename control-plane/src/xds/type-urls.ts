import { policyTypeUrls } from '@sekisho/service-kit/contract';

// Resource type URLs the ADS server serves, in make-before-break push order:
// clusters, then their endpoints, then the TLS secrets listeners name, then
// listeners, then their routes, then the policy resources of Sekisho's own services.
export const typeUrls = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  secret: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  authzPolicy: policyTypeUrls.authz,
  rateLimitPolicy: policyTypeUrls.rateLimit,
} as const;

export type TypeUrl = (typeof typeUrls)[keyof typeof typeUrls];

export const pushOrder: readonly TypeUrl[] = [
  typeUrls.cluster,
  typeUrls.endpoint,
  typeUrls.secret,
  typeUrls.listener,
  typeUrls.route,
  typeUrls.authzPolicy,
  typeUrls.rateLimitPolicy,
];

/** Types whose state-of-the-world responses carry every resource (wildcard subscriptions). */
export const wildcardTypes: ReadonlySet<string> = new Set([typeUrls.cluster, typeUrls.listener]);
