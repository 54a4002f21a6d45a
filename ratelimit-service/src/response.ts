import {
  RateLimitResponse_Code as Code,
  type RateLimitResponse_DescriptorStatus as DescriptorStatus,
  RateLimitResponse,
  RateLimitResponse_RateLimit_Unit as Unit,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import type { LimitDecision } from './limiter/types';

// Pure assembly of Envoy's answer from the limiter's decisions: per-descriptor
// statuses in request order, and the IETF RateLimit headers (draft-ietf-httpapi-
// ratelimit-headers, what express-rate-limit's `standardHeaders: true` sends) for
// the most restrictive rule. Envoy adds response_headers_to_add to allowed responses
// and to its 429 alike.

export const headerNames = {
  limit: 'ratelimit-limit',
  remaining: 'ratelimit-remaining',
  reset: 'ratelimit-reset',
  policy: 'ratelimit-policy',
  /** draft-10's one field for the current state: `"<policy>";r=<remaining>;t=<reset>`. */
  rateLimit: 'ratelimit',
  retryAfter: 'retry-after',
} as const;

/**
 * Which RateLimit fields to send. `draft-10` (the default; the current
 * draft-ietf-httpapi-ratelimit-headers): RateLimit-Policy `"<name>";q=300;w=60` for every
 * matching limit and RateLimit `"<name>";r=…;t=…` for the most restrictive one. `draft-06`
 * (RATELIMIT_HEADERS=draft-06, for older clients): RateLimit-Limit, -Remaining, -Reset and
 * RateLimit-Policy `300;w=60`, what express-rate-limit's `standardHeaders: true` sends.
 * Retry-After on a refusal either way.
 */
export type HeaderStyle = 'draft-06' | 'draft-10';

/** Seconds a client is told to wait when the limiter itself is down and the mode is deny. */
export const failureRetryAfterSeconds = 1;

const units: ReadonlyMap<number, Unit> = new Map([
  [1, Unit.SECOND],
  [60, Unit.MINUTE],
  [3600, Unit.HOUR],
  [86_400, Unit.DAY],
]);

/**
 * Envoy's RateLimit.Unit has no "N seconds": a window of exactly one unit maps to it;
 * any other window is UNKNOWN, and the status's name (the rule id) and
 * duration_until_reset describe it.
 */
export function unitFor(windowSeconds: number): Unit {
  return units.get(windowSeconds) ?? Unit.UNKNOWN;
}

/**
 * The decision a client must heed: among refusals the one that lasts longest (the
 * request stays refused until all have passed); otherwise the rule with the fewest
 * requests left, ties going to the later reset.
 */
export function mostRestrictive(decisions: readonly LimitDecision[]): LimitDecision | undefined {
  let chosen: LimitDecision | undefined;
  for (const d of decisions) {
    if (!chosen) chosen = d;
    else if (d.overLimit !== chosen.overLimit) {
      if (d.overLimit) chosen = d;
    } else if (d.overLimit) {
      if (d.resetSeconds > chosen.resetSeconds) chosen = d;
    } else if (
      d.remaining < chosen.remaining ||
      (d.remaining === chosen.remaining && d.resetSeconds > chosen.resetSeconds)
    ) {
      chosen = d;
    }
  }
  return chosen;
}

function statusOf(decisions: readonly LimitDecision[]): DescriptorStatus {
  const d = mostRestrictive(decisions);
  if (!d) return { code: Code.OK, limitRemaining: 0 };
  return {
    code: d.overLimit ? Code.OVER_LIMIT : Code.OK,
    currentLimit: { name: d.rule.id, requestsPerUnit: d.rule.requestsPerWindow, unit: unitFor(d.rule.windowSeconds) },
    limitRemaining: d.remaining,
    durationUntilReset: { seconds: d.resetSeconds, nanos: 0 },
  };
}

// raw_value stays empty (unset): Envoy then uses value. One shared empty buffer, never written.
const noRawValue = Buffer.alloc(0);
const header = (key: string, value: string | number) => ({ key, value: String(value), rawValue: noRawValue });

// A structured-field sf-string: printable ASCII, with " and \ escaped.
const sfString = (text: string) => `"${text.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, (c) => `\\${c}`)}"`;
const policyName = (rule: LimitDecision['rule']) => sfString(rule.policyName ?? rule.id);

/** The RateLimit headers for the most restrictive of the decisions (none when there are none). */
function rateLimitHeaders(all: readonly LimitDecision[], style: HeaderStyle) {
  const chosen = mostRestrictive(all);
  const headers = [];
  if (chosen && style === 'draft-10') {
    const policies = new Map(
      all.map((d) => [d.rule.id, `${policyName(d.rule)};q=${d.rule.requestsPerWindow};w=${d.rule.windowSeconds}`]),
    );
    headers.push(
      header(headerNames.policy, [...new Set(policies.values())].join(', ')),
      header(headerNames.rateLimit, `${policyName(chosen.rule)};r=${chosen.remaining};t=${chosen.resetSeconds}`),
    );
    if (chosen.overLimit) headers.push(header(headerNames.retryAfter, chosen.resetSeconds));
  } else if (chosen) {
    const policies = new Map(all.map((d) => [d.rule.id, `${d.rule.requestsPerWindow};w=${d.rule.windowSeconds}`]));
    headers.push(
      header(headerNames.limit, chosen.rule.requestsPerWindow),
      header(headerNames.remaining, chosen.remaining),
      header(headerNames.reset, chosen.resetSeconds),
      header(headerNames.policy, [...new Set(policies.values())].join(', ')),
    );
    if (chosen.overLimit) headers.push(header(headerNames.retryAfter, chosen.resetSeconds));
  }
  return headers;
}

/** The response for descriptors the limiter decided on; [] = no rule matched that descriptor. */
export function decidedResponse(
  perDescriptor: ReadonlyArray<readonly LimitDecision[]>,
  style: HeaderStyle = 'draft-10',
): RateLimitResponse {
  const statuses = perDescriptor.map(statusOf);
  const all = perDescriptor.flat();
  return RateLimitResponse.fromPartial({
    overallCode: all.some((d) => d.overLimit) ? Code.OVER_LIMIT : Code.OK,
    statuses,
    responseHeadersToAdd: rateLimitHeaders(all, style),
  });
}

/** What happened to one descriptor of a file domain's request. */
export type FileOutcome =
  | { readonly kind: 'none' }
  | { readonly kind: 'unlimited' }
  | {
      readonly kind: 'decided';
      readonly decision: LimitDecision;
      /** current_limit.name: the rate_limit's `name` ('' if it has none). */
      readonly name: string;
      readonly unit: Unit;
      /** Counted and reported, but never refuses (shadow_mode). */
      readonly shadow: boolean;
      /** Refuses the request only when every quota descriptor of it is over (quota_mode). */
      readonly quota: boolean;
    };

/** An unlimited descriptor's limit_remaining, as envoyproxy/ratelimit answers it. */
export const unlimitedRemaining = 4_294_967_295;

/**
 * The response for a domain from a configuration file, with envoyproxy/ratelimit's rules:
 * a shadow-mode descriptor over its limit is answered OK; the request is refused when a
 * plain descriptor is over, or when it has quota descriptors and all of them are over.
 */
export function fileDomainResponse(
  outcomes: readonly FileOutcome[],
  style: HeaderStyle = 'draft-10',
): RateLimitResponse {
  let refusedPlain = false;
  let quotaTotal = 0;
  let quotaOver = 0;
  for (const o of outcomes) {
    if (o.kind !== 'decided' || o.shadow) continue;
    if (o.quota) {
      quotaTotal++;
      if (o.decision.overLimit) quotaOver++;
    } else if (o.decision.overLimit) refusedPlain = true;
  }
  const refused = refusedPlain || (quotaTotal > 0 && quotaOver === quotaTotal);
  const statuses = outcomes.map((o): DescriptorStatus => {
    if (o.kind === 'none') return { code: Code.OK, limitRemaining: 0 };
    if (o.kind === 'unlimited') return { code: Code.OK, limitRemaining: unlimitedRemaining };
    const d = o.decision;
    return {
      code: d.overLimit && !o.shadow ? Code.OVER_LIMIT : Code.OK,
      currentLimit: { name: o.name, requestsPerUnit: d.rule.requestsPerWindow, unit: o.unit },
      limitRemaining: d.remaining,
      durationUntilReset: { seconds: d.resetSeconds, nanos: 0 },
    };
  });
  // Headers describe what the client is held to: not shadow limits, and quota limits only
  // when they refuse the request.
  const effective = outcomes.flatMap((o) =>
    o.kind === 'decided' && !o.shadow && (!o.quota || refused || !o.decision.overLimit) ? [o.decision] : [],
  );
  return RateLimitResponse.fromPartial({
    overallCode: refused ? Code.OVER_LIMIT : Code.OK,
    statuses,
    responseHeadersToAdd: rateLimitHeaders(effective, style),
  });
}

/**
 * A response without counting: `overLimit[i]` says whether descriptor i is refused.
 * Used for other domains (all false) and the failure modes (no policy, Redis down).
 */
export function undecidedResponse(overLimit: readonly boolean[]): RateLimitResponse {
  const refused = overLimit.some(Boolean);
  return RateLimitResponse.fromPartial({
    overallCode: refused ? Code.OVER_LIMIT : Code.OK,
    statuses: overLimit.map((over) => ({ code: over ? Code.OVER_LIMIT : Code.OK })),
    responseHeadersToAdd: refused ? [header(headerNames.retryAfter, failureRetryAfterSeconds)] : [],
  });
}
