// A path that some route serves, asked with a method no route takes, is answered 405 with
// an Allow header (RFC 9110 §15.5.6) instead of the 404 of a path that does not exist: one
// direct-response route per such path, after every declared route, so Envoy's first-match
// order still gives any declared route precedence. The answer needs no caller, so ext_authz
// is off there. (A direct response has no route action, so Envoy's ratelimit filters skip
// it: it costs Envoy one lookup and no call to any service.)

import { Route } from '@sekisho/proto/envoy/config/route/v3/route_components';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import type { GatewayIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { httpFilterNames } from './filter-names';

export function methodNotAllowedRoutes(ir: GatewayIR): Route[] {
  const byPath = new Map<string, { path: RouteIR['path']; methods: string[]; anyMethod: boolean }>();
  for (const route of ir.routes) {
    const key = `${route.path.kind} ${route.path.value}`;
    const entry = byPath.get(key) ?? { path: route.path, methods: [], anyMethod: false };
    if (route.method === undefined) entry.anyMethod = true;
    else if (!entry.methods.includes(route.method)) entry.methods.push(route.method);
    byPath.set(key, entry);
  }
  return [...byPath.values()]
    .filter((entry) => !entry.anyMethod)
    .map(({ path, methods }) =>
      Route.fromPartial({
        name: `method-not-allowed:${path.value}${path.kind === 'prefix' ? '*' : ''}`,
        match: path.kind === 'exact' ? { path: path.value } : { prefix: path.value },
        directResponse: { status: 405 },
        responseHeadersToAdd: [{ header: { key: 'allow', value: methods.join(', ') } }],
        typedPerFilterConfig: {
          [httpFilterNames.extAuthz]: pack(ExtAuthzPerRoute, ExtAuthzPerRoute.fromPartial({ disabled: true })),
        },
      }),
    );
}
