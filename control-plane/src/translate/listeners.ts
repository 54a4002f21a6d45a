// IR → the ingress Listener: one HTTP connection manager, hardened the way Envoy's edge
// best practices say, with routes over RDS (ADS), a JSON access log, and the filter chain
// header_mutation → ext_authz → ratelimit → router.

import { AccessLogFilter, ComparisonFilter_Op } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { HttpProtocolOptions_HeadersWithUnderscoresAction } from '@sekisho/proto/envoy/config/core/v3/protocol';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import { ExtAuthz } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import { HeaderMutation } from '@sekisho/proto/envoy/extensions/filters/http/header_mutation/v3/header_mutation';
import { RateLimit } from '@sekisho/proto/envoy/extensions/filters/http/ratelimit/v3/rate_limit';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import {
  HttpConnectionManager,
  HttpConnectionManager_PathWithEscapedSlashesAction,
  HttpConnectionManager_ServerHeaderTransformation,
  LocalReplyConfig,
  ResponseMapper,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { StatusCode } from '@sekisho/proto/envoy/type/v3/http_status';
import { allIdentityHeaders, identityHeaders, rateLimitDomain } from '@sekisho/service-kit/contract';
import { type ErrorCode, errorCatalogue } from '@sekisho/service-kit/errors';
import type { GatewayIR } from '../ir/types';
import { pack } from './any';
import { durationFromMs } from './duration';
import { edgeLimits } from './edge';
import { httpConnectionManagerName, httpFilterNames, stdoutAccessLogName } from './filter-names';

const adsConfigSource = { ads: {}, resourceApiVersion: ApiVersion.V3 };
const startTimeIso = '%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%';
const requestId = '%REQ(X-REQUEST-ID)%';

export function translateListeners(ir: GatewayIR): Listener[] {
  const hcm = HttpConnectionManager.fromPartial({
    statPrefix: ir.listener.name,
    rds: { configSource: adsConfigSource, routeConfigName: ir.listener.routeConfigName },
    httpFilters: httpFilters(ir),
    accessLog: [{ name: stdoutAccessLogName, typedConfig: pack(StdoutAccessLog, accessLog()) }],
    // Path hygiene before routing, so "/api/v1/../admin" or "%2F" tricks cannot reach a route
    // other than the one the path appears to name.
    normalizePath: true,
    mergeSlashes: true,
    pathWithEscapedSlashesAction: HttpConnectionManager_PathWithEscapedSlashesAction.UNESCAPE_AND_REDIRECT,
    commonHttpProtocolOptions: {
      headersWithUnderscoresAction: HttpProtocolOptions_HeadersWithUnderscoresAction.REJECT_REQUEST,
    },
    http2ProtocolOptions: edgeLimits.http2,
    maxRequestHeadersKb: edgeLimits.maxRequestHeadersKb,
    // The client address comes from the connection, or from X-Forwarded-For only as far as
    // the configured number of trusted proxies in front: per-IP limits and IP rules rely on it.
    // It also makes every request external, so Envoy drops client-sent x-envoy-* headers.
    useRemoteAddress: true,
    xffNumTrustedHops: ir.listener.xffNumTrustedHops,
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
  return [
    Listener.fromPartial({
      name: ir.listener.name,
      address: { socketAddress: { address: ir.listener.address, portValue: ir.listener.port } },
      perConnectionBufferLimitBytes: edgeLimits.connectionBufferBytes,
      filterChains: [{ filters: [{ name: httpConnectionManagerName, typedConfig: pack(HttpConnectionManager, hcm) }] }],
    }),
  ];
}

function httpFilters(ir: GatewayIR) {
  return [
    {
      // Identity headers are only ever set by ext-authz; client-sent copies never survive.
      name: httpFilterNames.headerMutation,
      typedConfig: pack(
        HeaderMutation,
        HeaderMutation.fromPartial({
          mutations: { requestMutations: allIdentityHeaders.map((header) => ({ remove: header })) },
        }),
      ),
    },
    {
      name: httpFilterNames.extAuthz,
      typedConfig: pack(
        ExtAuthz,
        ExtAuthz.fromPartial({
          grpcService: {
            envoyGrpc: { clusterName: ir.extAuthz.clusterName },
            timeout: durationFromMs(ir.extAuthz.timeoutMs),
          },
          transportApiVersion: ApiVersion.V3,
          // Authentication fails closed: no answer from ext-authz is a 503, never a pass.
          failureModeAllow: false,
          statusOnError: { code: StatusCode.ServiceUnavailable },
        }),
      ),
    },
    {
      name: httpFilterNames.rateLimit,
      typedConfig: pack(
        RateLimit,
        RateLimit.fromPartial({
          domain: rateLimitDomain,
          timeout: durationFromMs(ir.rateLimit.timeoutMs),
          failureModeDeny: ir.rateLimit.failureMode === 'deny',
          statusOnError: { code: StatusCode.ServiceUnavailable },
          rateLimitService: {
            grpcService: { envoyGrpc: { clusterName: ir.rateLimit.clusterName } },
            transportApiVersion: ApiVersion.V3,
          },
          // enable_x_ratelimit_headers stays OFF: the service returns its own RateLimit headers.
          // A 429 says what happened in its JSON body; x-envoy-ratelimited would only name Envoy.
          disableXEnvoyRatelimitedHeader: true,
        }),
      ),
    },
    {
      name: httpFilterNames.router,
      // No x-envoy-upstream-service-time (and the like) towards clients or services.
      typedConfig: pack(Router, Router.fromPartial({ suppressEnvoyHeaders: true })),
    },
  ];
}

/**
 * The reference design's log_structure fields; the Authorization header is never logged.
 * Envoy's stdout logger rather than a file logger on /dev/stdout: opening /dev/stdout fails
 * (ENXIO) when Envoy's stdout is a socket, which is what Node's child_process gives it.
 */
function accessLog(): StdoutAccessLog {
  return StdoutAccessLog.fromPartial({
    logFormat: {
      jsonFormat: {
        timestamp: startTimeIso,
        correlation_id: requestId,
        user_id: `%REQ(${identityHeaders.userId.toUpperCase()})%`,
        ip_address: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%',
        user_agent: '%REQ(USER-AGENT)%',
        // The path the client asked for, before any rewrite, without its query (which may carry tokens).
        endpoint: '%PATH(NQ:ORIG_OR_PATH)%',
        method: '%REQ(:METHOD)%',
        status_code: '%RESPONSE_CODE%',
        response_time: '%DURATION%',
        response_flags: '%RESPONSE_FLAGS%',
        upstream_cluster: '%UPSTREAM_CLUSTER%',
        route_name: '%ROUTE_NAME%',
      },
    },
  });
}

/**
 * Envoy's own replies (rate limited, no route, upstream unavailable) get the reference
 * design's JSON error body, in English when the client prefers it. Mappers match on
 * response flags where they can, so ext-authz's own 401/403 (and any 429) bodies pass
 * through untouched.
 */
function localReplyConfig(): LocalReplyConfig {
  const mappings: Array<{ code: ErrorCode; when: AccessLogFilter[]; extra?: Record<string, string> }> = [
    {
      code: 'RATE_LIMIT_EXCEEDED',
      when: [statusIs(429), responseFlagIs('RL')],
      // The ratelimit filter adds the service's response headers before the mapper formats
      // the body, so Retry-After is visible here (null when the service sent none).
      extra: { retry_after: '%RESP(RETRY-AFTER)%' },
    },
    { code: 'NOT_FOUND', when: [statusIs(404), responseFlagIs('NR')] },
    {
      code: 'SERVICE_UNAVAILABLE',
      when: [AccessLogFilter.fromPartial({ orFilter: { filters: [statusIs(502), statusIs(503), statusIs(504)] } })],
    },
  ];
  const mappers: ResponseMapper[] = mappings.flatMap(({ code, when, extra }) =>
    (['en', 'ja'] as const).map((language) => {
      const filters = language === 'en' ? [...when, prefersEnglish] : when;
      const [only] = filters;
      return ResponseMapper.fromPartial({
        filter: filters.length === 1 && only ? only : { andFilter: { filters } },
        bodyFormatOverride: {
          contentType: 'application/json',
          jsonFormat: {
            success: false,
            error: {
              code,
              message: errorCatalogue[code][language],
              correlation_id: requestId,
              timestamp: startTimeIso,
              ...extra,
            },
            data: null,
          },
        },
      });
    }),
  );
  return LocalReplyConfig.fromPartial({ mappers });
}

function statusIs(status: number): AccessLogFilter {
  return AccessLogFilter.fromPartial({
    statusCodeFilter: {
      comparison: {
        op: ComparisonFilter_Op.EQ,
        value: { defaultValue: status, runtimeKey: `sekisho.local_reply.status_${status}` },
      },
    },
  });
}

function responseFlagIs(flag: string): AccessLogFilter {
  return AccessLogFilter.fromPartial({ responseFlagFilter: { flags: [flag] } });
}

/** Same rule as service-kit's pickLanguage: the first preference starts with "en". */
const prefersEnglish = AccessLogFilter.fromPartial({
  headerFilter: { header: { name: 'accept-language', stringMatch: { prefix: 'en', ignoreCase: true } } },
});
