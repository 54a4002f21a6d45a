// Envoy's own replies (local replies: malformed requests, no route, body too large, rate
// limited, upstream unavailable, and the answers of filters such as ext_authz, RBAC, CSRF)
// rendered as the reference design's JSON error body, with the security headers.
// local_reply_config only ever sees local replies, so a service's own responses (its 413,
// its 500) pass through untouched.

import { AccessLogFilter, ComparisonFilter_Op } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import type { HeaderValueOption } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  LocalReplyConfig,
  ResponseMapper,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { type ErrorCode, errorCatalogue, type Language } from '@sekisho/service-kit/errors';
import { celFilter } from './cel';
import { preflightRefused } from './cors';
import { csrfRefused } from './csrf';
import { requestIdOperator as requestId, startTimeIso } from './formatters';
import { deniedBy, ipRulePolicies } from './ip-rules';

/**
 * One line per kind of local reply. Envoy applies the first mapper that matches, so order
 * matters: a line matches when the status (if given), every response flag (if given) and
 * every further filter (if given) match. `code: null` keeps the reply's body as it was written.
 */
export interface LocalReplyRule {
  status?: number;
  /** Envoy response flags (short form, e.g. RL, UAEX, NR). */
  flags?: string[];
  when?: AccessLogFilter[];
  code: ErrorCode | null;
  /** Further fields of `error`, as Envoy substitution formats. */
  extra?: Record<string, string>;
}

/**
 * A direct response the definition declares (routes[].directResponse) is the operator's own
 * answer, served as written. The gateway's own direct responses (413 on Content-Length, 405)
 * are named with a ":", which a route id cannot contain.
 */
const declaredDirectResponse = celFilter("response.code_details == 'direct_response' && !xds.route_name.contains(':')");

export const localReplyRules: readonly LocalReplyRule[] = [
  { when: [csrfRefused], code: 'CSRF_ORIGIN_MISMATCH' },
  { when: [preflightRefused], code: 'CORS_PREFLIGHT_REFUSED' },
  { when: [declaredDirectResponse], code: null },
  { status: 403, when: [deniedBy(ipRulePolicies.deny)], code: 'IP_BLOCKED' },
  { status: 403, when: [deniedBy(ipRulePolicies.geoBlock)], code: 'GEO_BLOCKED' },
  // Before the ext_authz line: ext-authz unreachable is a 503 flagged UAEX with no body.
  { status: 503, code: 'SERVICE_UNAVAILABLE' },
  // ext-authz's own denials (401, 403, 431, its 500) already carry the JSON body, in the
  // caller's language, with fields of their own (required_permissions).
  { flags: ['UAEX'], code: null },
  {
    status: 429,
    code: 'RATE_LIMIT_EXCEEDED',
    // The ratelimit filter adds the service's response headers before the mapper formats
    // the body, so Retry-After is visible here (null when the service sent none).
    extra: { retry_after: '%RESP(RETRY-AFTER)%' },
  },
  { status: 400, code: 'BAD_REQUEST' },
  { status: 404, code: 'NOT_FOUND' },
  { status: 405, code: 'METHOD_NOT_ALLOWED' },
  { status: 408, code: 'REQUEST_TIMEOUT' },
  { status: 413, code: 'PAYLOAD_TOO_LARGE' },
  { status: 426, code: 'UPGRADE_REQUIRED' },
  { status: 431, code: 'REQUEST_HEADERS_TOO_LARGE' },
  { status: 500, code: 'INTERNAL_SERVER_ERROR' },
  { status: 502, code: 'BAD_GATEWAY' },
  { status: 504, code: 'GATEWAY_TIMEOUT' },
];

/**
 * Japanese by default, English when the client prefers it: both messages come from the
 * catalogue. Every mapper adds the security headers; a last one adds them to any reply no
 * rule names.
 */
export function localReplyConfig(
  securityHeaders: HeaderValueOption[] = [],
  rules: readonly LocalReplyRule[] = localReplyRules,
): LocalReplyConfig {
  const mapper = (when: AccessLogFilter[], body: Record<string, unknown> | undefined) =>
    responseMapper(when, body, securityHeaders);
  const mappers = rules.flatMap((rule) => {
    const when = [
      ...(rule.status === undefined ? [] : [statusIs(rule.status)]),
      ...(rule.flags === undefined ? [] : [responseFlagsAre(rule.flags)]),
      ...(rule.when ?? []),
    ];
    const { code } = rule;
    if (code === null) return [mapper(when, undefined)];
    // English first: the Japanese mapper has no language condition and catches the rest.
    return (['en', 'ja'] as const).map((language) =>
      mapper(language === 'en' ? [...when, prefersEnglish] : when, errorJson(code, language, rule.extra)),
    );
  });
  return LocalReplyConfig.fromPartial({ mappers: [...mappers, mapper([anyStatus], undefined)] });
}

/** The one place a mapper is built, so every mapper gets whatever all of them need. */
function responseMapper(
  when: AccessLogFilter[],
  body: Record<string, unknown> | undefined,
  headersToAdd: HeaderValueOption[],
): ResponseMapper {
  return ResponseMapper.fromPartial({
    filter: allOf(when),
    ...(body === undefined
      ? {}
      : { bodyFormatOverride: { contentType: 'application/json; charset=utf-8', jsonFormat: body } }),
    headersToAdd,
  });
}

function errorJson(code: ErrorCode, language: Language, extra: Record<string, string> | undefined) {
  return {
    success: false,
    error: {
      code,
      message: errorCatalogue[code][language],
      correlation_id: requestId,
      timestamp: startTimeIso,
      ...extra,
    },
    data: null,
  };
}

function allOf(filters: AccessLogFilter[]): AccessLogFilter {
  const [only] = filters;
  if (filters.length === 1 && only) return only;
  return AccessLogFilter.fromPartial({ andFilter: { filters } });
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

/** Envoy's response-flag filter matches when any one of the flags is set. */
function responseFlagsAre(flags: string[]): AccessLogFilter {
  return AccessLogFilter.fromPartial({ responseFlagFilter: { flags } });
}

/** Same rule as service-kit's pickLanguage: the first preference starts with "en". */
const prefersEnglish = AccessLogFilter.fromPartial({
  headerFilter: { header: { name: 'accept-language', stringMatch: { prefix: 'en', ignoreCase: true } } },
});
