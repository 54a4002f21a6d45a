// What both of a sidecar's connection managers share: routes over RDS (ADS), the ingress's JSON
// access log, path hygiene before routing, header limits, the request timeouts of the edge.
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import {
  HttpConnectionManager,
  HttpConnectionManager_ServerHeaderTransformation,
  type HttpFilter,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { GatewayIR } from '../../ir/types';
import { stdoutAccessLogs } from '../access-log';
import { pack } from '../any';
import { durationFromMs } from '../duration';
import { edgeLimits } from '../edge';
import { httpConnectionManagerName, httpFilterNames } from '../filter-names';
import { requestHygiene } from '../request-hygiene';
import type { DeepPartial } from '../route-parts';

export function sidecarConnectionManager(
  ir: GatewayIR,
  opts: { statPrefix: string; routeConfigName: string; httpFilters: DeepPartial<HttpFilter>[] } & Pick<
    DeepPartial<HttpConnectionManager>,
    'useRemoteAddress' | 'xffNumTrustedHops' | 'skipXffAppend' | 'preserveExternalRequestId' | 'localReplyConfig'
  >,
) {
  const { statPrefix, routeConfigName, httpFilters, ...clientAddress } = opts;
  const hcm = HttpConnectionManager.fromPartial({
    statPrefix,
    rds: { configSource: { ads: {}, resourceApiVersion: ApiVersion.V3 }, routeConfigName },
    httpFilters: [
      ...httpFilters,
      { name: httpFilterNames.router, typedConfig: pack(Router, Router.fromPartial({ suppressEnvoyHeaders: true })) },
    ],
    accessLog: stdoutAccessLogs(),
    ...requestHygiene(ir),
    ...clientAddress,
    // The ingress's x-request-id travels through the mesh: one id correlates every hop's log line.
    generateRequestId: true,
    requestHeadersTimeout: durationFromMs(edgeLimits.requestHeadersTimeoutMs),
    requestTimeout: durationFromMs(edgeLimits.requestTimeoutMs),
    streamIdleTimeout: durationFromMs(edgeLimits.streamIdleTimeoutMs),
    serverHeaderTransformation: HttpConnectionManager_ServerHeaderTransformation.PASS_THROUGH,
  });
  return { name: httpConnectionManagerName, typedConfig: pack(HttpConnectionManager, hcm) };
}
