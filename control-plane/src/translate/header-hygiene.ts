// Header hygiene: what a client sends that the services must not believe is removed first,
// and X-Forwarded-For is rebuilt from the one client address Envoy derived. (The route side,
// the service's own Host and Authorization ending at the gateway, is in route-parts.ts.)

import { HeaderValueOption_HeaderAppendAction } from '@sekisho/proto/envoy/config/core/v3/base';
import { HeaderMutation } from '@sekisho/proto/envoy/extensions/filters/http/header_mutation/v3/header_mutation';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { GatewayIR } from '../ir/types';
import { pack } from './any';
import { type ClientAddressChain, cdnHeaders, clientAddressHeaders } from './client-address';
import { httpFilterNames } from './filter-names';

/** Envoy's own name for the path before a rewrite (what %PATH(ORIG)% reads). */
export const originalPathHeader = 'x-envoy-original-path';

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
            {
              // The path the client asked for, without its query, before a route rewrites it:
              // the router would record it only without suppress_envoy_headers, and the access
              // log's endpoint (%PATH(NQ:ORIG_OR_PATH)%) reads it. A client's own copy is replaced.
              append: {
                header: { key: originalPathHeader, value: '%PATH(NQ)%' },
                appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
              },
            },
          ],
        },
      }),
    ),
  });
}
