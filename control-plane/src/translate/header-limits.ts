// Request header limits that what the gateway adds can never push a request over.
//
// Envoy checks the connection manager's header limits twice: in the codec, on what the
// client sent, and in ext_authz after applying its answer, on everything the header map then
// holds (the client's headers, :method/:path/:scheme, Envoy's x-forwarded-*, x-request-id…,
// the identity headers). A request the codec had just accepted used to become an empty 500
// (ext_authz_invalid). So Envoy's own limits are edge.headers plus room, and ext-authz, told
// edge.headers in every route's context_extensions (routes.ts), answers 431 when the map with
// its headers would hold more: it counts Envoy's entries one by one (encode_raw_headers).
// Above Envoy's own limits the codec answers 431 itself (no x-request-id yet; sometimes with
// an empty body, which no local-reply mapper can change).

import type { GatewayIR } from '../ir/types';

/** Entries and KiB between edge.headers and Envoy's own limits. */
const countHeadroom = 20;
const sizeHeadroomKb = 16;

/** The connection manager's limits (common_http_protocol_options, max_request_headers_kb). */
export function envoyHeaderLimits(ir: GatewayIR): { maxHeadersCount: number; maxRequestHeadersKb: number } {
  return {
    maxHeadersCount: ir.requestHeaders.maxCount + countHeadroom,
    maxRequestHeadersKb: ir.requestHeaders.maxSizeKb + sizeHeadroomKb,
  };
}
