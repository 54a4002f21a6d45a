// IR routes → the ingress RouteConfiguration: one virtual host, routes in declared order,
// each carrying what ext-authz needs to decide (context_extensions) and the rate-limit
// actions that build its descriptors.

import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import {
  RateLimit,
  RateLimit_Action,
  RateLimit_Action_MetaData_Source,
  Route,
  VirtualHost,
} from '@sekisho/proto/envoy/config/route/v3/route_components';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import {
  authzContextKeys,
  authzDynamicMetadataKeys,
  authzDynamicMetadataNamespace,
  descriptorKeys,
  identityHeaders,
} from '@sekisho/service-kit/contract';
import type { GatewayIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { bodyLimitPerRoute, oversizedBodyRoute } from './body-limit';
import { corsPerFilterConfig, preflightRoutes } from './cors';
import {
  type Descriptor,
  type DescriptorEntry,
  envoyDescriptors,
  globalDescriptors,
  ordinaryClientClass,
  ownDescriptors,
  rateLimitStages,
  routeDescriptors,
  userLimitContext,
} from './descriptors';
import { revealingResponseHeaders } from './edge';
import { httpFilterNames } from './filter-names';
import { vipMetadata } from './ip-rules';
import { methodNotAllowedRoutes } from './method-not-allowed';
import { headerChanges, routeAction, routeMatch } from './route-parts';
import { securityHeadersPerFilterConfig } from './security-headers';

export function translateRoutes(ir: GatewayIR): RouteConfiguration[] {
  // The gateway-wide rate limits are the same on every route of one auth mode: built once.
  const globalRateLimits = new Map<RouteIR['auth'], RateLimit[]>();
  const globalFor = (auth: RouteIR['auth']) => {
    let limits = globalRateLimits.get(auth);
    if (limits === undefined) {
      limits = envoyDescriptors(ir, globalDescriptors(ir, auth)).map(rateLimit);
      globalRateLimits.set(auth, limits);
    }
    return limits;
  };
  const routes = ir.routes.map((route) => translateRoute(ir, route, globalFor(route.auth)));
  const virtualHost = VirtualHost.fromPartial({ name: ir.listener.routeConfigName, domains: ['*'] });
  // Already messages (Route.fromPartial): set directly, since fromPartial would copy every route again.
  virtualHost.routes = [
    // Preflights first: a preflight about a GET would match no GET route.
    ...preflightRoutes(ir, routes),
    // Each route's 413-on-Content-Length just ahead of it (body-limit.ts).
    ...ir.routes.flatMap((route, index) => {
      const translated = routes[index];
      if (translated === undefined) throw new Error(`no translated route for ${route.id}`);
      return route.action.kind === 'forward' ? [oversizedBodyRoute(route, translated.match), translated] : [translated];
    }),
    // A path some route serves, asked with another method: 405 with Allow.
    ...methodNotAllowedRoutes(ir),
  ];
  const config = RouteConfiguration.fromPartial({
    name: ir.listener.routeConfigName,
    responseHeadersToRemove: [...revealingResponseHeaders],
  });
  config.virtualHosts = [virtualHost];
  return [config];
}

function translateRoute(ir: GatewayIR, route: RouteIR, globalRateLimits: readonly RateLimit[]): Route {
  return Route.fromPartial({
    name: route.id,
    match: routeMatch(route),
    // In routeDescriptors' order: the global families, then the route's own.
    ...routeAction(route, () => [...globalRateLimits, ...envoyDescriptors(ir, ownDescriptors(route)).map(rateLimit)]),
    ...headerChanges(route.responseHeaders, 'response'),
    // Direct responses and redirects come after ext_authz too: they are authenticated unless auth: none.
    typedPerFilterConfig: {
      ...bodyLimitPerRoute(ir, route),
      [httpFilterNames.extAuthz]: pack(
        ExtAuthzPerRoute,
        ExtAuthzPerRoute.fromPartial({
          checkSettings: {
            contextExtensions: {
              [authzContextKeys.routeId]: route.id,
              [authzContextKeys.auth]: route.auth,
              [authzContextKeys.permissions]: route.permissions.join(','),
              ...ownerContext(route),
              ...(route.dryRun ? { [authzContextKeys.dryRun]: 'true' } : {}),
              [authzContextKeys.maxRequestHeaders]: String(ir.requestHeaders.maxCount),
              [authzContextKeys.maxRequestHeaderBytes]: String(ir.requestHeaders.maxSizeKb * 1024),
              // perUserLimits: ext-authz: the per-user families ext-authz counts in this Check.
              ...userLimitContext(ir, route.auth, routeDescriptors(ir, route)),
            },
          },
        }),
      ),
      ...corsPerFilterConfig(route),
      ...securityHeadersPerFilterConfig(route),
    },
  });
}

/** A descriptor as the route's rate-limit actions (also a sidecar's mesh routes'). */
export function rateLimit(descriptor: Descriptor): RateLimit {
  return RateLimit.fromPartial({
    stage: rateLimitStages[descriptor.stage],
    applyOnStreamDone: descriptor.onStreamDone ?? false,
    actions: descriptor.entries.map(rateLimitAction),
  });
}

/**
 * Envoy drops a whole descriptor when one of its actions yields nothing: the user action
 * without the identity header, the anonymous match when an Authorization header is there.
 * That is what keeps the authenticated and unauthenticated families apart. A request with
 * a token is not "anonymous" before authentication; if its token fails verification, it is
 * counted in the anonymous family afterwards (authenticationFailed, when the stream is done).
 */
function rateLimitAction(entry: DescriptorEntry): RateLimit_Action {
  switch (entry.kind) {
    case 'constant':
      return RateLimit_Action.fromPartial({ genericKey: { descriptorKey: entry.key, descriptorValue: entry.value } });
    case 'user':
      return RateLimit_Action.fromPartial({
        requestHeaders: { headerName: identityHeaders.userId, descriptorKey: descriptorKeys.user, skipIfAbsent: false },
      });
    case 'anonymous':
      return RateLimit_Action.fromPartial({
        headerValueMatch: {
          descriptorKey: descriptorKeys.anonymous,
          descriptorValue: 'true',
          expectMatch: false,
          // Before authentication there is no verified user yet, only the presence of a token.
          headers: [{ name: 'authorization', presentMatch: true }],
        },
      });
    case 'ordinaryClient':
      // The ip-rules RBAC filter names its matched VIP shadow policy in dynamic metadata;
      // everyone else gets the default.
      return RateLimit_Action.fromPartial({
        metadata: {
          descriptorKey: descriptorKeys.clientClass,
          metadataKey: { key: vipMetadata.namespace, path: [{ key: vipMetadata.key }] },
          defaultValue: ordinaryClientClass,
          source: RateLimit_Action_MetaData_Source.DYNAMIC,
        },
      });
    case 'remoteAddress':
      return RateLimit_Action.fromPartial({ remoteAddress: {} });
    case 'authenticationFailed':
      return RateLimit_Action.fromPartial({
        metadata: {
          descriptorKey: descriptorKeys.anonymous,
          metadataKey: {
            key: authzDynamicMetadataNamespace,
            path: [{ key: authzDynamicMetadataKeys.authenticationFailed }],
          },
          source: RateLimit_Action_MetaData_Source.DYNAMIC,
          // Absent (the token was fine, or there was none): no descriptor, nothing counted.
          skipIfAbsent: false,
        },
      });
  }
}

/** Only routes with an ownership check carry its key, so every other route stays as it was. */
function ownerContext(route: RouteIR): Record<string, string> {
  if (route.owner === undefined) return {};
  return route.owner.kind === 'pathSegment'
    ? { [authzContextKeys.ownerPathSegment]: String(route.owner.index) }
    : { [authzContextKeys.ownerQuery]: route.owner.name };
}
