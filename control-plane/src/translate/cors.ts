// CORS in Envoy's CORS filter: each route's policy (typed_per_filter_config), and the preflight
// routes that let a preflight reach the filter for every route, whatever the route's method.

import { HeaderMatcher, Route, RouteAction } from '@sekisho/proto/envoy/config/route/v3/route_components';
import { Cors, CorsPolicy } from '@sekisho/proto/envoy/extensions/filters/http/cors/v3/cors';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { StringMatcher } from '@sekisho/proto/envoy/type/matcher/v3/string';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import type { CorsIR, GatewayIR, OriginIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { celFilter } from './cel';
import { httpFilterNames } from './filter-names';
import { extAuthzOff } from './filters-off';

/** Whether any route has CORS; without, neither the filter nor the preflight routes exist. */
export function corsInUse(ir: GatewayIR): boolean {
  return ir.routes.some((route) => route.cors !== undefined);
}

export function corsFilter(): HttpFilter {
  return HttpFilter.fromPartial({ name: httpFilterNames.cors, typedConfig: pack(Cors, Cors.fromPartial({})) });
}

/**
 * The complete policy on every route that has one, never on the virtual host: Envoy's CORS
 * filter takes each field from the most specific level that sets it, so a route's empty
 * exposeHeaders would silently inherit the virtual host's.
 */
export function corsPolicy(cors: CorsIR): CorsPolicy {
  return CorsPolicy.fromPartial({
    allowOriginStringMatch: cors.allowOrigins.map(originMatcher),
    allowMethods: cors.allowMethods.join(', '),
    allowHeaders: cors.allowHeaders.join(', '),
    exposeHeaders: cors.exposeHeaders.join(', '),
    maxAge: String(cors.maxAgeSeconds),
    allowCredentials: cors.allowCredentials,
    // A preflight from an origin that is not allowed is answered by Envoy, never forwarded.
    forwardNotMatchingPreflights: false,
  });
}

export function corsPerFilterConfig(route: RouteIR): Record<string, Any> {
  return route.cors === undefined ? {} : { [httpFilterNames.cors]: pack(CorsPolicy, corsPolicy(route.cors)) };
}

/** Exact for a plain origin; RE2 for "scheme://*.host" (one DNS label, nothing after the host). */
export function originMatcher(origin: OriginIR): StringMatcher {
  if (!origin.anyLabel)
    return StringMatcher.fromPartial({ exact: originPrefix(origin) + origin.host + portSuffix(origin) });
  return StringMatcher.fromPartial({ safeRegex: { regex: originRegex(origin) } });
}

/** The same origin as a RE2 expression (full match). */
export function originRegex(origin: OriginIR): string {
  const label = origin.anyLabel ? anyLabel : '';
  return `${escapeRegex(originPrefix(origin))}${label}${escapeRegex(origin.host + portSuffix(origin))}`;
}

/** CSRF compares host[:port] only (Envoy strips the scheme of Origin and Host alike). */
export function hostMatcher(origin: OriginIR): StringMatcher {
  if (!origin.anyLabel) return StringMatcher.fromPartial({ exact: origin.host + portSuffix(origin) });
  return StringMatcher.fromPartial({
    safeRegex: { regex: `${anyLabel}${escapeRegex(origin.host + portSuffix(origin))}` },
  });
}

/** One DNS label and its dot: `*.example.com` matches `app.example.com`, not `a.b.example.com`. */
const anyLabel = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\\.';

function originPrefix(origin: OriginIR): string {
  return `${origin.scheme}://`;
}

function portSuffix(origin: OriginIR): string {
  return origin.port === undefined ? '' : `:${origin.port}`;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Preflight routes, placed before every other route. A preflight (OPTIONS with Origin and
 * Access-Control-Request-Method) asks about a request that has not been sent: a route
 * `GET /x` does not match it, so without these it would find no route, and the CORS filter
 * (which needs a route) would never see it. Each route gets a pair, in the routes' order,
 * matching the route's path with Access-Control-Request-Method in place of :method:
 *
 * - `<id>.preflight`: the Origin is one the route allows. It carries the route's policy, and
 *   the CORS filter answers it (200 with the CORS headers) before authentication, so its
 *   route action is never used (it is the route's, authenticated like the route, should it
 *   ever be reached).
 * - `<id>.preflight-refused`: any other Origin. A 403 direct response with no CORS headers.
 *
 * So a preflight about (method, path) gets exactly the answer of the route that would serve
 * the request itself, and a preflight about a request no route serves ends in the final
 * `preflight-refused` route. A non-preflight OPTIONS matches none of these.
 */
export function preflightRoutes(ir: GatewayIR, translated: readonly Route[]): Route[] {
  if (!corsInUse(ir)) return [];
  const pairs = ir.routes.flatMap((route, index) => {
    const normal = translated[index];
    if (normal?.match === undefined) return [];
    const pathMatch = { ...normal.match, headers: [] as HeaderMatcher[] };
    const requested = normal.match.headers.find((header) => header.name === ':method');
    const requestMethod: HeaderMatcher = requested
      ? { ...requested, name: accessControlRequestMethod }
      : HeaderMatcher.fromPartial({ name: accessControlRequestMethod, presentMatch: true });
    const pair: Route[] = [];
    if (route.cors !== undefined && normal.route !== undefined) {
      pair.push({
        ...normal,
        name: `${route.id}.preflight`,
        match: { ...pathMatch, headers: [isOptions, requestMethod, originIn(route.cors.allowOrigins)] },
        // Never used (the CORS filter answers first), but it names the route's cluster(s).
        route: RouteAction.fromPartial({
          cluster: normal.route.cluster,
          ...(normal.route.weightedClusters ? { weightedClusters: normal.route.weightedClusters } : {}),
        }),
        typedPerFilterConfig: { ...normal.typedPerFilterConfig, ...corsPerFilterConfig(route) },
      });
    }
    pair.push(refused(`${route.id}.preflight-refused`, { ...pathMatch, headers: [isOptions, requestMethod] }));
    return pair;
  });
  return [
    ...pairs,
    refused('preflight-refused', {
      prefix: '/',
      headers: [isOptions, HeaderMatcher.fromPartial({ name: accessControlRequestMethod, presentMatch: true })],
    }),
  ];
}

const accessControlRequestMethod = 'access-control-request-method';
const isOptions = HeaderMatcher.fromPartial({ name: ':method', stringMatch: { exact: 'OPTIONS' } });
const originPresent = HeaderMatcher.fromPartial({ name: 'origin', presentMatch: true });

function originIn(origins: readonly OriginIR[]): HeaderMatcher {
  const alternatives = origins.map(originRegex).join('|');
  return HeaderMatcher.fromPartial({ name: 'origin', stringMatch: { safeRegex: { regex: `(?:${alternatives})` } } });
}

function refused(name: string, match: Partial<NonNullable<Route['match']>> & { headers: HeaderMatcher[] }): Route {
  return Route.fromPartial({
    name,
    match: { ...match, headers: [...match.headers.filter((header) => header.name !== 'origin'), originPresent] },
    directResponse: { status: 403 },
    // No token to check: the refusal needs no authentication.
    typedPerFilterConfig: {
      [httpFilterNames.extAuthz]: extAuthzOff,
    },
  });
}

/** The 403 of a preflight-refused route (a direct response to an OPTIONS preflight). */
export const preflightRefused = celFilter(
  "response.code == 403 && response.code_details == 'direct_response' && request.method == 'OPTIONS' && 'access-control-request-method' in request.headers",
);
