// Envoy's own replies (local replies: no route, rate limited, upstream unavailable, and the
// answers of filters such as ext_authz) rendered as the reference design's JSON error body.

import { AccessLogFilter, ComparisonFilter_Op } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import type { HeaderValueOption } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  LocalReplyConfig,
  ResponseMapper,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { type ErrorCode, errorCatalogue } from '@sekisho/service-kit/errors';
import { preflightRefused } from './cors';
import { csrfRefused } from './csrf';
import { requestIdOperator as requestId, startTimeIso } from './formatters';
import { deniedBy, ipRulePolicies } from './ip-rules';

/**
 * Envoy's own replies (rate limited, no route, upstream unavailable) get the reference
 * design's JSON error body, in English when the client prefers it. Mappers match on
 * response flags where they can, so ext-authz's own 401/403 (and any 429) bodies pass
 * through untouched.
 */
export function localReplyConfig(securityHeaders: HeaderValueOption[] = []): LocalReplyConfig {
  const mappings: Array<{ code: ErrorCode; when: AccessLogFilter[]; extra?: Record<string, string> }> = [
    { code: 'CSRF_ORIGIN_MISMATCH', when: [csrfRefused] },
    { code: 'CORS_PREFLIGHT_REFUSED', when: [preflightRefused] },
    {
      code: 'RATE_LIMIT_EXCEEDED',
      when: [statusIs(429), responseFlagIs('RL')],
      // The ratelimit filter adds the service's response headers before the mapper formats
      // the body, so Retry-After is visible here (null when the service sent none).
      extra: { retry_after: '%RESP(RETRY-AFTER)%' },
    },
    { code: 'NOT_FOUND', when: [statusIs(404), responseFlagIs('NR')] },
    { code: 'IP_BLOCKED', when: [statusIs(403), deniedBy(ipRulePolicies.deny)] },
    { code: 'GEO_BLOCKED', when: [statusIs(403), deniedBy(ipRulePolicies.geoBlock)] },
    { code: 'REQUEST_HEADERS_TOO_LARGE', when: [statusIs(431)] },
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
        headersToAdd: securityHeaders,
      });
    }),
  );
  // Last: a reply no mapper above matches keeps its body but still gets the security headers.
  return LocalReplyConfig.fromPartial({ mappers: [...mappers, { filter: anyStatus, headersToAdd: securityHeaders }] });
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

const anyStatus = AccessLogFilter.fromPartial({
  statusCodeFilter: {
    comparison: {
      op: ComparisonFilter_Op.GE,
      value: { defaultValue: 0, runtimeKey: 'sekisho.local_reply.any_status' },
    },
  },
});

function responseFlagIs(flag: string): AccessLogFilter {
  return AccessLogFilter.fromPartial({ responseFlagFilter: { flags: [flag] } });
}

/** Same rule as service-kit's pickLanguage: the first preference starts with "en". */
const prefersEnglish = AccessLogFilter.fromPartial({
  headerFilter: { header: { name: 'accept-language', stringMatch: { prefix: 'en', ignoreCase: true } } },
});
