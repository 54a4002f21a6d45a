// Security headers on every response: a header_mutation filter first in the chain (so last to
// see a response: upstream answers and the local replies of every later filter alike), the same
// headers on Envoy's local-reply mappers (for replies sent before the filter chain exists), and
// each route's changes as the filter's per-route config.

import { HeaderValueOption, HeaderValueOption_HeaderAppendAction } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  HeaderMutation,
  HeaderMutationPerRoute,
} from '@sekisho/proto/envoy/extensions/filters/http/header_mutation/v3/header_mutation';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import type { GatewayIR, ResponseHeaderIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { httpFilterNames } from './filter-names';

/** What the listener is: HSTS only means something (and is only obeyed) over HTTPS. */
export interface ListenerKind {
  tls: boolean;
}

/** The headers every response of a listener carries. */
export function securityResponseHeaders(ir: GatewayIR, listener: ListenerKind): ResponseHeaderIR[] {
  const hsts = ir.browser.strictTransportSecurity;
  return listener.tls && hsts !== undefined
    ? [{ name: 'strict-transport-security', value: hsts }, ...ir.browser.securityHeaders]
    : ir.browser.securityHeaders;
}

/** For local-reply mappers: set, replacing whatever the reply had. */
export function securityHeaderOptions(ir: GatewayIR, listener: ListenerKind): HeaderValueOption[] {
  return securityResponseHeaders(ir, listener).map(overwrite);
}

export function securityHeadersFilter(ir: GatewayIR, listener: ListenerKind): HttpFilter {
  return HttpFilter.fromPartial({
    name: httpFilterNames.securityHeaders,
    typedConfig: pack(
      HeaderMutation,
      HeaderMutation.fromPartial({
        // The gateway's values win over a service's own: the services are not the security boundary.
        mutations: {
          responseMutations: securityResponseHeaders(ir, listener).map((header) => ({ append: overwrite(header) })),
        },
      }),
    ),
  });
}

/**
 * Applied after the filter-level mutations, so a route's value (or removal) wins. A route with
 * CORS also says `Vary: Origin`: its answers carry the caller's origin, and a cache in front
 * (the CDN) must not hand one origin's answer to another.
 */
export function securityHeadersPerFilterConfig(route: RouteIR): Record<string, Any> {
  const override = route.securityHeaders;
  const responseMutations = [
    ...(override?.set ?? []).map((header) => ({ append: overwrite(header) })),
    ...(override?.remove ?? []).map((name) => ({ remove: name })),
    ...(route.cors === undefined ? [] : [{ append: varyOrigin }]),
  ];
  if (responseMutations.length === 0) return {};
  return {
    [httpFilterNames.securityHeaders]: pack(
      HeaderMutationPerRoute,
      HeaderMutationPerRoute.fromPartial({ mutations: { responseMutations } }),
    ),
  };
}

const varyOrigin = HeaderValueOption.fromPartial({
  header: { key: 'vary', value: 'Origin' },
  appendAction: HeaderValueOption_HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD,
});

function overwrite(header: ResponseHeaderIR): HeaderValueOption {
  return HeaderValueOption.fromPartial({
    header: { key: header.name, value: header.value },
    appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
  });
}
