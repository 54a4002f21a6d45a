// IR → the ingress Listeners: plain HTTP (`ingress_http`) and, with listeners.https, TLS
// (`ingress_https`). Each runs HTTP connection managers hardened the way Envoy's edge best
// practices say, with routes over RDS (ADS), a JSON access log, the filter chain of
// http-filters.ts, and Envoy's own replies in the reference JSON format (local-reply.ts).
//
// A listener's filter chains are built from a list of (match, connection manager) variants;
// on the TLS listener every variant is repeated per certificate, with the certificate's SNI
// names added to its match and its TLS transport socket, so a variant added (e.g. per source
// address) is automatically served over TLS too.

import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import type { FilterChainMatch } from '@sekisho/proto/envoy/config/listener/v3/listener_components';
import { HttpGrpcAccessLogConfig } from '@sekisho/proto/envoy/extensions/access_loggers/grpc/v3/als';
import {
  HttpConnectionManager,
  HttpConnectionManager_ServerHeaderTransformation,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { GatewayIR, HttpsListenerIR } from '../ir/types';
import { stdoutAccessLogs, threatAccessLog } from './access-log';
import { pack } from './any';
import { type ClientAddressChain, clientAddressChains } from './client-address';
import { durationFromMs } from './duration';
import { edgeLimits } from './edge';
import { grpcAccessLogName, httpConnectionManagerName } from './filter-names';
import { httpFilters } from './http-filters';
import { localReplyConfig } from './local-reply';
import { requestHygiene } from './request-hygiene';
import { securityHeaderOptions } from './security-headers';
import { downstreamTlsTransportSocket, tlsInspector } from './tls';

const adsConfigSource = { ads: {}, resourceApiVersion: ApiVersion.V3 };

export function translateListeners(ir: GatewayIR): Listener[] {
  // While plain HTTP redirects, its routes are the exempt paths' and the redirect.
  const httpRoutes = ir.listener.httpsRedirect?.routeConfigName ?? ir.listener.routeConfigName;
  const http = Listener.fromPartial({
    name: ir.listener.name,
    address: { socketAddress: { address: ir.listener.address, portValue: ir.listener.port } },
    perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
    filterChains: chainVariants(ir, { statPrefix: ir.listener.name, routeConfigName: httpRoutes, tls: false }).map(
      ({ name, match, hcm }) => ({
        name,
        ...(match ? { filterChainMatch: match } : {}),
        filters: [connectionManagerFilter(hcm)],
      }),
    ),
  });
  return ir.https ? [http, httpsListener(ir, ir.https)] : [http];
}

/** One filter chain's (match, connection manager). No match: the chain takes every connection. */
interface ChainVariant {
  name: string;
  match?: Partial<FilterChainMatch>;
  hcm: HttpConnectionManager;
}

/** Which listener a connection manager is for. */
export interface ListenerContext {
  statPrefix: string;
  routeConfigName: string;
  /** The connection is TLS (the https listener): what only HTTPS may carry (HSTS) goes here. */
  tls: boolean;
}

/** The ingress's connection-manager variants: one per kind of peer (client-address.ts), chosen by source. */
function chainVariants(ir: GatewayIR, context: ListenerContext): ChainVariant[] {
  return clientAddressChains(ir).map((chain) => ({
    name: chain.peer,
    ...(chain.filterChainMatch ? { match: chain.filterChainMatch } : {}),
    hcm: httpConnectionManager(ir, context, chain),
  }));
}

function connectionManagerFilter(hcm: HttpConnectionManager) {
  return { name: httpConnectionManagerName, typedConfig: pack(HttpConnectionManager, hcm) };
}

/**
 * One filter chain per (certificate, variant): a certificate with serverNames is chosen by SNI
 * (which the TLS inspector reads); the default certificate's chains have no server_names and
 * take every other connection (no SNI, or a name nobody lists).
 */
function httpsListener(ir: GatewayIR, https: HttpsListenerIR): Listener {
  const variants = chainVariants(ir, { statPrefix: https.name, routeConfigName: https.routeConfigName, tls: true });
  const bySni = https.certificates.filter((certificate) => certificate.serverNames.length > 0);
  const certificateChains = [
    ...bySni.map((certificate) => ({ secretName: certificate.secretName, serverNames: certificate.serverNames })),
    { secretName: https.defaultSecretName, serverNames: [] as string[] },
  ];
  const filterChains = certificateChains.flatMap(({ secretName, serverNames }) =>
    variants.map(({ name, match, hcm }) => {
      const chainMatch = { ...match, ...(serverNames.length > 0 ? { serverNames } : {}) };
      return {
        name: `${name}/${secretName}`,
        ...(Object.keys(chainMatch).length > 0 ? { filterChainMatch: chainMatch } : {}),
        filters: [connectionManagerFilter(hcm)],
        transportSocket: downstreamTlsTransportSocket(secretName),
      };
    }),
  );
  return Listener.fromPartial({
    name: https.name,
    address: { socketAddress: { address: https.address, portValue: https.port } },
    perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
    listenerFilters: [tlsInspector()],
    filterChains,
  });
}

function httpConnectionManager(
  ir: GatewayIR,
  { statPrefix, routeConfigName, tls }: ListenerContext,
  chain: ClientAddressChain,
): HttpConnectionManager {
  return HttpConnectionManager.fromPartial({
    statPrefix,
    rds: { configSource: adsConfigSource, routeConfigName },
    httpFilters: httpFilters(ir, chain, { tls }),
    accessLog: [
      ...stdoutAccessLogs(),
      ...(ir.threats
        ? [{ name: grpcAccessLogName, typedConfig: pack(HttpGrpcAccessLogConfig, threatAccessLog(ir.threats)) }]
        : []),
    ],
    ...requestHygiene(ir),
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
    localReplyConfig: localReplyConfig(securityHeaderOptions(ir, { tls })),
  });
}
