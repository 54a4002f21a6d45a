// IR → the ingress Listener: one HTTP connection manager, hardened the way Envoy's edge
// best practices say, with routes over RDS (ADS), a JSON access log, the filter chain of
// http-filters.ts, and Envoy's own replies in the reference JSON format (local-reply.ts).

import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { HttpProtocolOptions_HeadersWithUnderscoresAction } from '@sekisho/proto/envoy/config/core/v3/protocol';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import {
  HttpConnectionManager,
  HttpConnectionManager_PathWithEscapedSlashesAction,
  HttpConnectionManager_ServerHeaderTransformation,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { GatewayIR } from '../ir/types';
import { accessLog } from './access-log';
import { pack } from './any';
import { type ClientAddressChain, clientAddressChains } from './client-address';
import { durationFromMs } from './duration';
import { edgeLimits } from './edge';
import { httpConnectionManagerName, stdoutAccessLogName } from './filter-names';
import { envoyHeaderLimits } from './header-limits';
import { httpFilters } from './http-filters';
import { localReplyConfig } from './local-reply';

const adsConfigSource = { ads: {}, resourceApiVersion: ApiVersion.V3 };

export function translateListeners(ir: GatewayIR): Listener[] {
  return [
    Listener.fromPartial({
      name: ir.listener.name,
      address: { socketAddress: { address: ir.listener.address, portValue: ir.listener.port } },
      perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
      // One chain per kind of peer (client-address.ts), chosen by the connection's source.
      filterChains: clientAddressChains(ir).map((chain) => ({
        name: chain.peer,
        filterChainMatch: chain.filterChainMatch,
        filters: [
          {
            name: httpConnectionManagerName,
            typedConfig: pack(HttpConnectionManager, httpConnectionManager(ir, chain)),
          },
        ],
      })),
    }),
  ];
}

function httpConnectionManager(ir: GatewayIR, chain: ClientAddressChain): HttpConnectionManager {
  return HttpConnectionManager.fromPartial({
    statPrefix: ir.listener.name,
    rds: { configSource: adsConfigSource, routeConfigName: ir.listener.routeConfigName },
    httpFilters: httpFilters(ir, chain),
    accessLog: [{ name: stdoutAccessLogName, typedConfig: pack(StdoutAccessLog, accessLog()) }],
    // Path hygiene before routing, so "/api/v1/../admin" or "%2F" tricks cannot reach a route
    // other than the one the path appears to name.
    normalizePath: true,
    mergeSlashes: true,
    pathWithEscapedSlashesAction: HttpConnectionManager_PathWithEscapedSlashesAction.UNESCAPE_AND_REDIRECT,
    commonHttpProtocolOptions: {
      headersWithUnderscoresAction: HttpProtocolOptions_HeadersWithUnderscoresAction.REJECT_REQUEST,
      // Above edge.headers, which ext-authz enforces (header-limits.ts).
      maxHeadersCount: envoyHeaderLimits(ir).maxHeadersCount,
    },
    http2ProtocolOptions: edgeLimits.http2,
    maxRequestHeadersKb: envoyHeaderLimits(ir).maxRequestHeadersKb,
    // The client address: the peer, or what a trusted proxy appended to X-Forwarded-For
    // (client-address.ts). Per-IP limits and IP rules rely on it. use_remote_address also
    // makes every request external, so Envoy drops client-sent x-envoy-* headers.
    ...chain.connectionManager,
    // x-request-id is the correlation id of every log line; a client cannot choose it, and
    // gets it back on every response (also the ones that carry no JSON error body).
    generateRequestId: true,
    preserveExternalRequestId: false,
    alwaysSetRequestIdInResponse: true,
    requestHeadersTimeout: durationFromMs(edgeLimits.requestHeadersTimeoutMs),
    requestTimeout: durationFromMs(edgeLimits.requestTimeoutMs),
    streamIdleTimeout: durationFromMs(edgeLimits.streamIdleTimeoutMs),
    // No "server: envoy" on Envoy's own replies; the route configuration removes the
    // services' own Server header.
    serverHeaderTransformation: HttpConnectionManager_ServerHeaderTransformation.PASS_THROUGH,
    localReplyConfig: localReplyConfig(),
  });
}
