import type { HeaderValue } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  RateLimitResponse_Code as Code,
  type RateLimitResponse_DescriptorStatus as DescriptorStatus,
  type RateLimitResponse,
  type RateLimitResponse_RateLimit,
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

// Per rule, what its status and headers always say, built once (rules live as long as their
// policy or file): current_limit, and its RateLimit-Policy item.
interface RuleParts {
  readonly currentLimit: RateLimitResponse_RateLimit;
  readonly name: string;
  readonly draft10Policy: string;
  readonly draft06Policy: string;
}
const ruleParts = new WeakMap<LimitDecision['rule'], RuleParts>();
function partsOf(rule: LimitDecision['rule']): RuleParts {
  let parts = ruleParts.get(rule);
  if (!parts) {
    const name = policyName(rule);
    parts = {
      currentLimit: { name: rule.id, requestsPerUnit: rule.requestsPerWindow, unit: unitFor(rule.windowSeconds) },
      name,
      draft10Policy: `${name};q=${rule.requestsPerWindow};w=${rule.windowSeconds}`,
      draft06Policy: `${rule.requestsPerWindow};w=${rule.windowSeconds}`,
    };
    ruleParts.set(rule, parts);
  }
  return parts;
}

function statusOf(decisions: readonly LimitDecision[]): DescriptorStatus {
  const d = mostRestrictive(decisions);
  if (!d) return { code: Code.OK, limitRemaining: 0 };
  return {
    code: d.overLimit ? Code.OVER_LIMIT : Code.OK,
    currentLimit: partsOf(d.rule).currentLimit,
    limitRemaining: d.remaining,
    durationUntilReset: { seconds: d.resetSeconds, nanos: 0 },
  };
}

// raw_value stays empty (unset): Envoy then uses value. One shared empty buffer, never written.
const noRawValue = Buffer.alloc(0);
const header = (key: string, value: string | number): HeaderValue => ({
  key,
  value: String(value),
  rawValue: noRawValue,
});
// Shared by every response, never written (the encoder only reads them).
const noHeaders: HeaderValue[] = Object.freeze([]) as unknown as HeaderValue[];
const noBody = Buffer.alloc(0);

/** A complete response object (what fromPartial would build, without copying it all again). */
const response = (overallCode: Code, statuses: DescriptorStatus[], headers: HeaderValue[]): RateLimitResponse => ({
  overallCode,
  statuses,
  responseHeadersToAdd: headers,
  requestHeadersToAdd: noHeaders,
  rawBody: noBody,
  dynamicMetadata: undefined,
  quota: undefined,
});

// A structured-field sf-string: printable ASCII, with " and \ escaped.
const sfString = (text: string) => `"${text.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, (c) => `\\${c}`)}"`;
const policyName = (rule: LimitDecision['rule']) => sfString(rule.policyName ?? rule.id);

/** The RateLimit-Policy field: each rule's item once, in order (two rules may say the same). */
function policyField(all: readonly LimitDecision[], item: (parts: RuleParts) => string): string {
  if (all.length === 1) return item(partsOf((all[0] as LimitDecision).rule));
  const items: string[] = [];
  for (const d of all) {
    const text = item(partsOf(d.rule));
    if (!items.includes(text)) items.push(text);
  }
  return items.join(', ');
}
const draft10Item = (parts: RuleParts) => parts.draft10Policy;
const draft06Item = (parts: RuleParts) => parts.draft06Policy;

/** The RateLimit headers for the most restrictive of the decisions (none when there are none). */
function rateLimitHeaders(all: readonly LimitDecision[], style: HeaderStyle): HeaderValue[] {
  const chosen = mostRestrictive(all);
  if (!chosen) return [];
  const headers: HeaderValue[] = [];
  if (style === 'draft-10') {
    headers.push(
      header(headerNames.policy, policyField(all, draft10Item)),
      header(headerNames.rateLimit, `${partsOf(chosen.rule).name};r=${chosen.remaining};t=${chosen.resetSeconds}`),
    );
  } else {
    headers.push(
      header(headerNames.limit, chosen.rule.requestsPerWindow),
      header(headerNames.remaining, chosen.remaining),
      header(headerNames.reset, chosen.resetSeconds),
      header(headerNames.policy, policyField(all, draft06Item)),
    );
  }
  if (chosen.overLimit) headers.push(header(headerNames.retryAfter, chosen.resetSeconds));
  return headers;
}

/** The response for descriptors the limiter decided on; [] = no rule matched that descriptor. */
export function decidedResponse(
  perDescriptor: ReadonlyArray<readonly LimitDecision[]>,
  style: HeaderStyle = 'draft-10',
): RateLimitResponse {
  const statuses: DescriptorStatus[] = new Array(perDescriptor.length);
  for (let i = 0; i < perDescriptor.length; i++) statuses[i] = statusOf(perDescriptor[i] as readonly LimitDecision[]);
  const all = perDescriptor.length === 1 ? (perDescriptor[0] as readonly LimitDecision[]) : perDescriptor.flat();
  return response(all.some((d) => d.overLimit) ? Code.OVER_LIMIT : Code.OK, statuses, rateLimitHeaders(all, style));
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
  return response(refused ? Code.OVER_LIMIT : Code.OK, statuses, rateLimitHeaders(effective, style));
}

/**
 * A response without counting: `overLimit[i]` says whether descriptor i is refused.
 * Used for other domains (all false) and the failure modes (no policy, Redis down).
 */
export function undecidedResponse(overLimit: readonly boolean[]): RateLimitResponse {
  const refused = overLimit.some(Boolean);
  return response(
    refused ? Code.OVER_LIMIT : Code.OK,
    overLimit.map((over) => ({ code: over ? Code.OVER_LIMIT : Code.OK, limitRemaining: 0 })),
    refused ? [header(headerNames.retryAfter, failureRetryAfterSeconds)] : [],
  );
}
