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
import { type DescriptorEntry, rateLimitStages, routeDescriptors } from './descriptors';
import { durationFromMs } from './duration';
import { revealingResponseHeaders } from './edge';
import { httpFilterNames } from './filter-names';
import { methodNotAllowedRoutes } from './method-not-allowed';
import { routeMatch } from './route-match';

export function translateRoutes(ir: GatewayIR): RouteConfiguration[] {
  return [
    RouteConfiguration.fromPartial({
      name: ir.listener.routeConfigName,
      virtualHosts: [
        {
          name: ir.listener.routeConfigName,
          domains: ['*'],
          routes: [
            ...ir.routes.flatMap((route) => [oversizedBodyRoute(route), translateRoute(ir, route)]),
            ...methodNotAllowedRoutes(ir),
          ],
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
    route: {
      cluster: route.clusterName,
      ...(route.rewrite === undefined ? {} : { prefixRewrite: route.rewrite }),
      timeout: durationFromMs(route.timeoutMs),
      // Only failures where the request never reached the service, so even a POST is safe to retry.
      retryPolicy: {
        retryOn: 'connect-failure,refused-stream',
        numRetries: 2,
        retryBackOff: { baseInterval: durationFromMs(25), maxInterval: durationFromMs(250) },
      },
      rateLimits: routeDescriptors(ir, route).map((descriptor) => ({
        stage: rateLimitStages[descriptor.stage],
        applyOnStreamDone: descriptor.onStreamDone ?? false,
        actions: descriptor.entries.map(rateLimitAction),
      })),
    },
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
            },
          },
        }),
      ),
    },
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
