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
import type { ClientAddressChain } from './client-address';
import { compressionFilters } from './compression';
import { corsFilter, corsInUse } from './cors';
import { csrfFilter } from './csrf';
import { type DescriptorStage, rateLimitStages, userLimitsInExtAuthz } from './descriptors';
import { durationFromMs } from './duration';
import { httpFilterNames } from './filter-names';
import { requestHeaderHygiene } from './header-hygiene';
import { ipRuleFilters } from './ip-rules';
import { policyServiceGrpc } from './policy-grpc';
import { type ListenerKind, securityHeadersFilter } from './security-headers';

export function httpFilters(ir: GatewayIR, chain: ClientAddressChain, listener: ListenerKind): HttpFilter[] {
  return [
    // First, so it is the last to see every response (Envoy's own replies too).
    securityHeadersFilter(ir, listener),
    requestHeaderHygiene(ir, chain),
    stripIdentityHeaders(),
    // Preflights are answered here, before anything asks for a token.
    ...(corsInUse(ir) ? [corsFilter()] : []),
    // Denied addresses and countries cost nothing further.
    ...ipRuleFilters(ir),
    // A forged cross-site POST is refused before it costs a token verification.
    ...(ir.browser.csrf ? [csrfFilter(ir.browser.csrf)] : []),
    // Before every filter that pauses the request: see body-limit.ts.
    bodyLimitFilter(ir),
    // Per-IP limits before anything costs a signature verification; per-user ones after it,
    // unless ext-authz counts those in its Check (no second call to make).
    rateLimit(ir, 'beforeAuth'),
    extAuthz(ir),
    ...(userLimitsInExtAuthz(ir) ? [] : [rateLimit(ir, 'afterAuth')]),
    ...(ir.browser.compression ? compressionFilters(ir.browser.compression) : []),
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

/**
 * Also a sidecar's inbound ext_authz (`peerCertificate`): there it sends the caller's
 * certificate too, so ext-authz decides on the verified workload (source.principal).
 */
export function extAuthz(ir: GatewayIR, options: { peerCertificate?: boolean } = {}): HttpFilter {
  return HttpFilter.fromPartial({
    name: httpFilterNames.extAuthz,
    typedConfig: pack(
      ExtAuthz,
      ExtAuthz.fromPartial({
        grpcService: {
          ...policyServiceGrpc(ir.extAuthz.clusterName, ir.extAuthz.timeoutMs),
          timeout: durationFromMs(ir.extAuthz.timeoutMs),
        },
        transportApiVersion: ApiVersion.V3,
        // Every header entry on its own (not comma-joined): ext-authz counts them against
        // Envoy's header limits before it adds its own (contract.ts maxRequestHeaders).
        encodeRawHeaders: true,
        // Authentication fails closed: no answer from ext-authz is a 503, never a pass.
        failureModeAllow: false,
        statusOnError: { code: StatusCode.ServiceUnavailable },
        ...(options.peerCertificate ? { includePeerCertificate: true } : {}),
      }),
    ),
  });
}

/** Also a sidecar's inbound rate limits, for its mesh routes. */
export function rateLimit(ir: GatewayIR, stage: DescriptorStage): HttpFilter {
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
          grpcService: policyServiceGrpc(ir.rateLimit.clusterName, ir.rateLimit.timeoutMs),
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
