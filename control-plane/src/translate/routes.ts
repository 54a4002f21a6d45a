// IR routes → the ingress RouteConfiguration: one virtual host, routes in declared order,
// each carrying what ext-authz needs to decide (context_extensions) and the rate-limit
// actions that build its descriptors.

import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import {
  RateLimit_Action,
  RateLimit_Action_MetaData_Source,
  Route,
} from '@sekisho/proto/envoy/config/route/v3/route_components';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import { authzContextKeys, descriptorKeys, identityHeaders } from '@sekisho/service-kit/contract';
import type { GatewayIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { corsPerFilterConfig, preflightRoutes } from './cors';
import { type DescriptorEntry, ordinaryClientClass, routeDescriptors } from './descriptors';
import { revealingResponseHeaders } from './edge';
import { httpFilterNames } from './filter-names';
import { vipMetadata } from './ip-rules';
import { headerChanges, routeAction, routeMatch } from './route-parts';
import { securityHeadersPerFilterConfig } from './security-headers';

export function translateRoutes(ir: GatewayIR): RouteConfiguration[] {
  const routes = ir.routes.map((route) => translateRoute(ir, route));
  return [
    RouteConfiguration.fromPartial({
      name: ir.listener.routeConfigName,
      virtualHosts: [
        {
          name: ir.listener.routeConfigName,
          domains: ['*'],
          // Preflights first: a preflight about a GET would match no GET route.
          routes: [...preflightRoutes(ir, routes), ...routes],
        },
      ],
      responseHeadersToRemove: [...revealingResponseHeaders],
    }),
  ];
}

function translateRoute(ir: GatewayIR, route: RouteIR): Route {
  return Route.fromPartial({
    name: route.id,
    match: routeMatch(route),
    ...routeAction(route, () =>
      routeDescriptors(ir, route).map((descriptor) => ({
        actions: descriptor.entries.map(rateLimitAction),
      })),
    ),
    ...headerChanges(route.responseHeaders, 'response'),
    // Direct responses and redirects come after ext_authz too: they are authenticated unless auth: none.
    typedPerFilterConfig: {
      [httpFilterNames.extAuthz]: pack(
        ExtAuthzPerRoute,
        ExtAuthzPerRoute.fromPartial({
          checkSettings: {
            contextExtensions: {
              [authzContextKeys.routeId]: route.id,
              [authzContextKeys.auth]: route.auth,
              [authzContextKeys.permissions]: route.permissions.join(','),
              [authzContextKeys.maxRequestHeaders]: String(ir.requestHeaders.maxCount),
              [authzContextKeys.maxRequestHeaderBytes]: String(ir.requestHeaders.maxSizeKb * 1024),
            },
          },
        }),
      ),
      ...corsPerFilterConfig(route),
      ...securityHeadersPerFilterConfig(route),
    },
  });
}

/**
 * Envoy drops a whole descriptor when one of its actions yields nothing: the user action
 * without the identity header, the anonymous match when the header is there. That is what
 * keeps the authenticated and unauthenticated families apart.
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
          headers: [{ name: identityHeaders.userId, presentMatch: true }],
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
  }
}
