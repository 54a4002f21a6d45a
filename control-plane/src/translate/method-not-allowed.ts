// A path that some route serves, asked with a method no route takes, is answered 405 with
// an Allow header (RFC 9110 §15.5.6) instead of the 404 of a path that does not exist: one
// direct-response route per such path, after every declared route, so Envoy's first-match
// order still gives any declared route precedence. The answer needs no caller, so ext_authz
// is off there. (A direct response has no route action, so Envoy's ratelimit filters skip
// it: it costs Envoy one lookup and no call to any service.)

import { Route } from '@sekisho/proto/envoy/config/route/v3/route_components';
import type { GatewayIR, RouteIR } from '../ir/types';
import { httpFilterNames } from './filter-names';
import { extAuthzOff } from './filters-off';
import { pathMatch } from './route-parts';

export function methodNotAllowedRoutes(ir: GatewayIR): Route[] {
  const byPath = new Map<string, { path: RouteIR['path']; methods: string[]; anyMethod: boolean }>();
  // Only routes that match on the path and method alone: a request that fails a route's
  // header or query condition is not "the wrong method" for it.
  for (const route of ir.routes.filter((r) => r.headers.length === 0 && r.query.length === 0)) {
    const key = `${route.path.kind} ${route.path.value}`;
    const entry = byPath.get(key) ?? { path: route.path, methods: [], anyMethod: false };
    if (route.methods.length === 0) entry.anyMethod = true;
    for (const method of route.methods) if (!entry.methods.includes(method)) entry.methods.push(method);
    byPath.set(key, entry);
  }
  return [...byPath.values()]
    .filter((entry) => !entry.anyMethod)
    .map(({ path, methods }) =>
      Route.fromPartial({
        name: `method-not-allowed:${path.kind}:${path.value}`,
        match: pathMatch(path),
        directResponse: { status: 405 },
        responseHeadersToAdd: [{ header: { key: 'allow', value: methods.join(', ') } }],
        typedPerFilterConfig: {
          [httpFilterNames.extAuthz]: extAuthzOff,
        },
      }),
    );
}
