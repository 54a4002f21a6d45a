// Request-body limits with Envoy's buffer filter: it holds the body until it is complete and
// answers 413 (a local reply, so in the JSON format) as soon as it passes the limit, before
// the service has seen a byte of it. A Content-Length above the limit is refused on the
// headers alone. The price: the service gets the body only once all of it has arrived
// (store-and-forward), and Envoy holds up to the limit in memory per request in flight.
//
// It runs before the filters that pause a request for a call (the ratelimit filters,
// ext_authz). After them, a body that arrived during the call is held under the
// connection's 32 KiB buffer watermark, and a body reaching the limit made Envoy stop
// reading without finishing or refusing it (a 64 KiB body hung until the request timeout,
// 408, on Envoy 1.40). So the body is complete, or refused, before anyone is asked; the
// ratelimit and ext-authz calls then see whole requests.

import { Route } from '@sekisho/proto/envoy/config/route/v3/route_components';
import { Buffer as BufferFilter, BufferPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/buffer/v3/buffer';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import type { GatewayIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { httpFilterNames } from './filter-names';
import { bufferOff, extAuthzOff } from './filters-off';
import { routeMatch } from './route-parts';

type RouteMatchPartial = ReturnType<typeof routeMatch>;

/**
 * The buffer filter only counts bytes as they arrive, so a request that announces a larger
 * Content-Length is answered by a direct-response route just ahead of the route: 413 on the
 * headers alone, before any body is read and before anyone is asked (no ext_authz, and a
 * direct response has no rate limits to send). `match`: the route's own (routeMatch), when
 * the caller already built it.
 */
export function oversizedBodyRoute(route: RouteIR, match: RouteMatchPartial = routeMatch(route)): Route {
  return Route.fromPartial({
    name: `${route.id}:body-too-large`,
    match: {
      ...match,
      headers: [
        ...(match.headers ?? []),
        { name: 'content-length', rangeMatch: { start: route.maxRequestBodyBytes + 1, end: Number.MAX_SAFE_INTEGER } },
      ],
    },
    directResponse: { status: 413 },
    typedPerFilterConfig: {
      // The buffer filter would hold the headers until a body arrives that never will.
      [httpFilterNames.buffer]: bufferOff,
      [httpFilterNames.extAuthz]: extAuthzOff,
    },
  });
}

export function bodyLimitFilter(ir: GatewayIR): HttpFilter {
  return HttpFilter.fromPartial({
    name: httpFilterNames.buffer,
    typedConfig: pack(BufferFilter, BufferFilter.fromPartial({ maxRequestBytes: ir.requestBody.defaultMaxBytes })),
  });
}

/** A route's own limit, only where it differs from the filter's default. */
export function bodyLimitPerRoute(ir: GatewayIR, route: RouteIR): Record<string, Any> {
  if (route.maxRequestBodyBytes === ir.requestBody.defaultMaxBytes) return {};
  return {
    [httpFilterNames.buffer]: pack(
      BufferPerRoute,
      BufferPerRoute.fromPartial({ buffer: { maxRequestBytes: route.maxRequestBodyBytes } }),
    ),
  };
}
