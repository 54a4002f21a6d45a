// The RouteMatch of a route: its path (exact or prefix) and method. Shared by the route
// itself and the direct-response routes placed next to it (body too large).
import { RouteMatch } from '@sekisho/proto/envoy/config/route/v3/route_components';
import type { RouteIR } from '../ir/types';

export function routeMatch(route: RouteIR): RouteMatch {
  return RouteMatch.fromPartial({
    ...(route.path.kind === 'exact' ? { path: route.path.value } : { prefix: route.path.value }),
    headers: route.method === undefined ? [] : [{ name: ':method', stringMatch: { exact: route.method } }],
  });
}
