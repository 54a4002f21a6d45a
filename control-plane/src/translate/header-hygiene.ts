// Header hygiene: what a client sends that the services must not believe is removed first,
// X-Forwarded-For is rebuilt from the one client address Envoy derived, the service gets the
// Host its route decides, and the Authorization header ends at the gateway once verified.

import { HeaderValueOption_HeaderAppendAction } from '@sekisho/proto/envoy/config/core/v3/base';
import type { Route } from '@sekisho/proto/envoy/config/route/v3/route_components';
import { HeaderMutation } from '@sekisho/proto/envoy/extensions/filters/http/header_mutation/v3/header_mutation';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { GatewayIR, RouteIR } from '../ir/types';
import { pack } from './any';
import { type ClientAddressChain, cdnHeaders, clientAddressHeaders } from './client-address';
import { httpFilterNames } from './filter-names';

/** The first filter of every chain: strip, then X-Forwarded-For = the derived client address. */
export function requestHeaderHygiene(ir: GatewayIR, chain: ClientAddressChain): HttpFilter {
  const remove = [
    ...ir.requestHeaders.strip,
    ...clientAddressHeaders,
    // The country header and its kin mean something only when the CDN wrote them.
    ...(chain.peer === 'direct' ? cdnHeaders(ir) : []),
  ].filter((name, index, all) => all.indexOf(name) === index);
  return HttpFilter.fromPartial({
    name: httpFilterNames.requestHeaderHygiene,
    typedConfig: pack(
      HeaderMutation,
      HeaderMutation.fromPartial({
        mutations: {
          requestMutations: [
            ...remove.map((header) => ({ remove: header })),
            {
              // Envoy appended the peer to whatever the client sent; the services get one
              // entry, the address every rule and limit used.
              append: {
                header: { key: 'x-forwarded-for', value: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%' },
                appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
              },
            },
          ],
        },
      }),
    ),
  });
}

/** Route fields: the service's Host, and Authorization removed after ext_authz has seen it. */
export function routeHeaderHygiene(route: RouteIR): {
  hostRewriteLiteral: string;
  requestHeadersToRemove: Route['requestHeadersToRemove'];
} {
  return {
    hostRewriteLiteral: route.upstreamHost,
    requestHeadersToRemove: route.forwardAuthorization ? [] : ['authorization'],
  };
}
