// IR → the plain-HTTP listener's RouteConfiguration while it redirects to HTTPS: the ingress
// routes, each narrowed to the exempt paths (so `/health` is routed on HTTP exactly as on
// HTTPS, with everything the ingress route carries), then a 308 to https for the rest.

import type { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import {
  HeaderMatcher,
  RedirectAction_RedirectResponseCode,
  Route,
  type VirtualHost,
} from '@sekisho/proto/envoy/config/route/v3/route_components';
import type { GatewayIR, HttpsRedirectIR } from '../ir/types';
import { httpFilterNames } from './filter-names';
import { extAuthzOff } from './filters-off';

export const httpsRedirectRouteName = 'https-redirect';

/** `routes` plus, while plain HTTP redirects, its own configuration derived from the ingress one. */
export function withHttpsRedirect(ir: GatewayIR, routes: RouteConfiguration[]): RouteConfiguration[] {
  const redirect = ir.listener.httpsRedirect;
  const ingress = routes.find((config) => config.name === ir.listener.routeConfigName);
  if (!redirect || !ingress) return routes;
  // New objects wherever the copy differs; the rest is shared with the ingress configuration,
  // which nothing mutates (a deep copy cost as much as encoding 10,000 routes twice).
  const copy: RouteConfiguration = {
    ...ingress,
    name: redirect.routeConfigName,
    virtualHosts: ingress.virtualHosts.map((host) => redirectingHost(host, redirect)),
  };
  return [...routes, copy];
}

function redirectingHost(host: VirtualHost, redirect: HttpsRedirectIR): VirtualHost {
  const exempt = exemptPathRegex(redirect.exempt);
  const routed = exempt
    ? host.routes
        .filter((route) => mayMatchExempt(route, redirect.exempt))
        .map((route) => ({
          ...route,
          match: route.match && {
            ...route.match,
            // :path after the connection manager normalised it, query string included.
            headers: [
              ...route.match.headers,
              HeaderMatcher.fromPartial({ name: ':path', stringMatch: { safeRegex: { regex: exempt } } }),
            ],
          },
        }))
    : [];
  return { ...host, routes: [...routed, redirectRoute(redirect)] };
}

/** False only for a path or prefix route that no exempt path can reach (other kinds are kept). */
function mayMatchExempt(route: Route, exempt: HttpsRedirectIR['exempt']): boolean {
  const path = route.match?.path;
  const prefix = route.match?.prefix;
  if (path !== undefined) {
    return exempt.some((e) => (e.kind === 'exact' ? e.value === path : path.startsWith(e.value)));
  }
  if (prefix !== undefined) {
    return exempt.some((e) => e.value.startsWith(prefix) || (e.kind === 'prefix' && prefix.startsWith(e.value)));
  }
  return true;
}

function redirectRoute(redirect: HttpsRedirectIR): Route {
  return Route.fromPartial({
    name: httpsRedirectRouteName,
    match: { prefix: '/' },
    redirect: {
      httpsRedirect: true,
      // 443 is https's own: Envoy then drops an explicit :80 and the Location has no port.
      ...(redirect.httpsPort === 443 ? {} : { portRedirect: redirect.httpsPort }),
      // 308 keeps the method and body (301 lets clients turn a POST into a GET).
      responseCode: RedirectAction_RedirectResponseCode.PERMANENT_REDIRECT,
    },
    // A redirect needs no caller: no token is checked (it would be sent again over HTTPS anyway).
    typedPerFilterConfig: {
      [httpFilterNames.extAuthz]: extAuthzOff,
    },
  });
}

/** One RE2 (full match) for the whole :path: "/health" with or without a query, "/status/…". */
export function exemptPathRegex(exempt: HttpsRedirectIR['exempt']): string | undefined {
  if (exempt.length === 0) return undefined;
  const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const alternatives = exempt.map((path) =>
    path.kind === 'exact' ? `${escapeRegex(path.value)}(?:\\?.*)?` : `${escapeRegex(path.value)}.*`,
  );
  return alternatives.length === 1 ? (alternatives[0] as string) : `(?:${alternatives.join('|')})`;
}
