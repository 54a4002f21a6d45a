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
//
// A service with routes of its own (mesh.services.<name>.routes) gets ext_authz after RBAC:
// each of those routes carries its requirements in context_extensions, marked as a mesh
// inbound check with the trust domain, and ext-authz decides on the calling workload and the
// forwarded end user (ext-authz/README.md). Requests matching none of them (health and
// readiness paths among them, unless listed) skip ext_authz: RBAC alone decides. Their
// per-IP and per-user limits are the ingress's descriptors, sent to the same rate-limit service.
import {
  Cluster,
  Cluster_DiscoveryType,
  Cluster_DnsLookupFamily,
} from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import type { Route } from '@sekisho/proto/envoy/config/route/v3/route_components';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import type { GatewayIR, MeshRouteIR, MeshServiceIR } from '../../ir/types';
import { pack } from '../any';
import { translateCluster } from '../clusters';
import { envoyDescriptors, ownDescriptors, userLimitContext, userLimitsInExtAuthz } from '../descriptors';
import { durationFromMs } from '../duration';
import { edgeLimits } from '../edge';
import { httpFilterNames } from '../filter-names';
import { extAuthz, rateLimit } from '../http-filters';
import { type LocalReplyRule, localReplyConfig } from '../local-reply';
import { type DeepPartial, pathMatch } from '../route-parts';
import { rateLimit as routeRateLimit } from '../routes';
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
            httpFilters: [meshRbacFilter(service), ...policyFilters(ir, service)],
            useRemoteAddress: true,
            xffNumTrustedHops: 1,
            skipXffAppend: true,
            preserveExternalRequestId: true,
            ...(service.routes.length > 0 ? { localReplyConfig: localReplyConfig([], policyReplies) } : {}),
          }),
        ],
        transportSocket: meshDownstreamTls(),
      },
    ],
  });
}

/**
 * The policy filters' replies in the ingress's JSON error format: ext-authz's own denials keep
 * their body; ext-authz unreachable and a rate-limited request get one. Everything else (RBAC's
 * 403, the app's own responses) passes as before.
 */
const policyReplies: readonly LocalReplyRule[] = [
  { status: 503, flags: ['UAEX'], code: 'SERVICE_UNAVAILABLE' },
  { flags: ['UAEX'], code: null },
  { status: 429, flags: ['RL'], code: 'RATE_LIMIT_EXCEEDED', extra: { retry_after: '%RESP(RETRY-AFTER)%' } },
];

/** After RBAC, as at the ingress: per-IP limits, ext_authz, per-user limits; only what the routes use. */
function policyFilters(ir: GatewayIR, service: MeshServiceIR) {
  if (service.routes.length === 0) return [];
  const limited = (per: 'user' | 'ip') => service.routes.some((route) => route.limits.some((l) => l.per === per));
  return [
    ...(limited('ip') ? [rateLimit(ir, 'beforeAuth')] : []),
    extAuthz(ir, { peerCertificate: true }),
    // Unless ext-authz counts the per-user limits in its Check (perUserLimits: ext-authz).
    ...(limited('user') && !userLimitsInExtAuthz(ir) ? [rateLimit(ir, 'afterAuth')] : []),
  ];
}

export function inboundRoutes(ir: GatewayIR, service: MeshServiceIR): RouteConfiguration {
  // No retries here: the caller's sidecar (or the ingress) decides those.
  const toApp = { cluster: sidecarAppClusterName, timeout: durationFromMs(service.timeoutMs) };
  const everythingElse: DeepPartial<Route> = {
    match: { prefix: '/' },
    route: toApp,
    ...(service.routes.length > 0
      ? {
          typedPerFilterConfig: {
            [httpFilterNames.extAuthz]: pack(ExtAuthzPerRoute, ExtAuthzPerRoute.fromPartial({ disabled: true })),
          },
        }
      : {}),
  };
  return RouteConfiguration.fromPartial({
    name: sidecarInboundName,
    virtualHosts: [
      {
        name: 'app',
        domains: ['*'],
        routes: [...service.routes.map((route) => meshRoute(ir, route, toApp)), everythingElse],
      },
    ],
    // What Envoy's routing decision needs is in the route; the app sees the headers as sent.
    validateClusters: false,
  });
}

function meshRoute(ir: GatewayIR, route: MeshRouteIR, toApp: DeepPartial<Route>['route']): DeepPartial<Route> {
  const mesh = ir.mesh;
  if (mesh === undefined) throw new Error('a mesh route needs the mesh');
  return {
    name: route.id,
    match: {
      ...pathMatch(route.path),
      headers: route.methods.length === 0 ? [] : [{ name: ':method', stringMatch: methodMatch(route.methods) }],
    },
    route: { ...toApp, rateLimits: envoyDescriptors(ir, ownDescriptors(route)).map(routeRateLimit) },
    typedPerFilterConfig: {
      [httpFilterNames.extAuthz]: pack(
        ExtAuthzPerRoute,
        ExtAuthzPerRoute.fromPartial({
          checkSettings: {
            contextExtensions: {
              [authzContextKeys.routeId]: route.id,
              [authzContextKeys.permissions]: route.permissions.join(','),
              [authzContextKeys.meshTrustDomain]: mesh.trustDomain,
              [authzContextKeys.meshChainSeconds]: String(Math.ceil(edgeLimits.requestTimeoutMs / 1000)),
              [authzContextKeys.maxRequestHeaders]: String(ir.requestHeaders.maxCount),
              [authzContextKeys.maxRequestHeaderBytes]: String(ir.requestHeaders.maxSizeKb * 1024),
              // The forwarded end user's per-route counts, when ext-authz keeps them.
              ...userLimitContext(ir, 'mesh', ownDescriptors(route)),
            },
          },
        }),
      ),
    },
  };
}

function methodMatch(methods: readonly string[]) {
  return methods.length === 1 ? { exact: methods[0] } : { safeRegex: { regex: `^(?:${methods.join('|')})$` } };
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
