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
import { type DescriptorEntry, ordinaryClientClass, routeDescriptors } from './descriptors';
import { durationFromMs } from './duration';
import { revealingResponseHeaders } from './edge';
import { httpFilterNames } from './filter-names';
import { routeHeaderHygiene } from './header-hygiene';
import { vipMetadata } from './ip-rules';

export function translateRoutes(ir: GatewayIR): RouteConfiguration[] {
  return [
    RouteConfiguration.fromPartial({
      name: ir.listener.routeConfigName,
      virtualHosts: [
        {
          name: ir.listener.routeConfigName,
          domains: ['*'],
          routes: ir.routes.map((route) => translateRoute(ir, route)),
        },
      ],
      responseHeadersToRemove: [...revealingResponseHeaders],
    }),
  ];
}

function translateRoute(ir: GatewayIR, route: RouteIR): Route {
  const { hostRewriteLiteral, requestHeadersToRemove } = routeHeaderHygiene(route);
  return Route.fromPartial({
    name: route.id,
    match: {
      ...(route.path.kind === 'exact' ? { path: route.path.value } : { prefix: route.path.value }),
      headers: route.method === undefined ? [] : [{ name: ':method', stringMatch: { exact: route.method } }],
    },
    requestHeadersToRemove,
    route: {
      cluster: route.clusterName,
      hostRewriteLiteral,
      ...(route.rewrite === undefined ? {} : { prefixRewrite: route.rewrite }),
      timeout: durationFromMs(route.timeoutMs),
      // Only failures where the request never reached the service, so even a POST is safe to retry.
      retryPolicy: {
        retryOn: 'connect-failure,refused-stream',
        numRetries: 2,
        retryBackOff: { baseInterval: durationFromMs(25), maxInterval: durationFromMs(250) },
      },
      rateLimits: routeDescriptors(ir, route).map((descriptor) => ({
        actions: descriptor.entries.map(rateLimitAction),
      })),
    },
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
