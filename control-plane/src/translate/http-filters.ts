// The ingress HTTP filter chain, in order. Each filter's configuration is built here or in
// its own module; this file is the one place that says which filters run, and in what order.

import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { ExtAuthz } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import { HeaderMutation } from '@sekisho/proto/envoy/extensions/filters/http/header_mutation/v3/header_mutation';
import { RateLimit } from '@sekisho/proto/envoy/extensions/filters/http/ratelimit/v3/rate_limit';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { StatusCode } from '@sekisho/proto/envoy/type/v3/http_status';
import { allIdentityHeaders, rateLimitDomain } from '@sekisho/service-kit/contract';
import type { GatewayIR } from '../ir/types';
import { pack } from './any';
import { bodyLimitFilter } from './body-limit';
import { type DescriptorStage, rateLimitStages } from './descriptors';
import { durationFromMs } from './duration';
import { httpFilterNames } from './filter-names';

export function httpFilters(ir: GatewayIR): HttpFilter[] {
  return [
    stripIdentityHeaders(),
    // Before every filter that pauses the request: see body-limit.ts.
    bodyLimitFilter(ir),
    rateLimit(ir, 'beforeAuth'),
    extAuthz(ir),
    rateLimit(ir, 'afterAuth'),
    router(),
  ];
}

/** Identity headers are only ever set by ext-authz; client-sent copies never survive. */
function stripIdentityHeaders(): HttpFilter {
  return HttpFilter.fromPartial({
    name: httpFilterNames.headerMutation,
    typedConfig: pack(
      HeaderMutation,
      HeaderMutation.fromPartial({
        mutations: { requestMutations: allIdentityHeaders.map((header) => ({ remove: header })) },
      }),
    ),
  });
}

function extAuthz(ir: GatewayIR): HttpFilter {
  return HttpFilter.fromPartial({
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
  });
}

function rateLimit(ir: GatewayIR, stage: DescriptorStage): HttpFilter {
  return HttpFilter.fromPartial({
    name: stage === 'afterAuth' ? httpFilterNames.rateLimit : httpFilterNames.rateLimitBeforeAuth,
    typedConfig: pack(
      RateLimit,
      RateLimit.fromPartial({
        domain: rateLimitDomain,
        stage: rateLimitStages[stage],
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
  });
}

function router(): HttpFilter {
  return HttpFilter.fromPartial({
    name: httpFilterNames.router,
    // No x-envoy-upstream-service-time (and the like) towards clients or services.
    typedConfig: pack(Router, Router.fromPartial({ suppressEnvoyHeaders: true })),
  });
}
