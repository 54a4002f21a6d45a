import { type ServiceError, status } from '@grpc/grpc-js';
import {
  RateLimitResponse_Code as Code,
  type RateLimitRequest,
  type RateLimitResponse,
  type RateLimitServiceServer,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import type { Logger } from '@sekisho/service-kit/logger';
import type { CompiledFileDomain } from './file-config/compile';
import { createFileDomainDecision } from './file-config/decide';
import { failureAnswer, failureCode, failureMessage, type StoreFailureMode } from './limiter/resilient-limiter';
import type { LimitDecision, Limiter } from './limiter/types';
import { LogThrottle } from './log-throttle';
import { countHits, type DecisionResult, type RateLimitMetrics, type RuleMetrics, ruleMetrics } from './metrics';
import {
  type CompiledPolicy,
  type CompiledRule,
  type DescriptorEntry,
  overrideRule,
  type RuleMatch,
} from './policy/compile';
import { decidedResponse, type HeaderStyle, undecidedResponse } from './response';

/** What to answer when no decision can be made: allow (Envoy's own default) or refuse. */
export type FailureMode = 'allow' | 'deny';

export interface RateLimitServiceDeps {
  /** The policy in force, undefined until the control plane has sent one. */
  policy: () => CompiledPolicy | undefined;
  /** Domains from configuration files (RATELIMIT_CONFIG_DIR); none when there is no directory. */
  fileDomains?: () => ReadonlyMap<string, CompiledFileDomain>;
  /**
   * A control plane is configured: before its policy arrives, requests for domains no file
   * owns are answered by noPolicyMode. Without one (files only) such domains are not limited.
   */
  controlPlane?: boolean;
  /** The ResilientLimiter in production: the local cache, Redis behind its breaker, the local limiter. */
  limiter: Limiter;
  /** When the limiter's store (Redis) fails: the one in force (the policy may set it). */
  failureMode: () => StoreFailureMode;
  /** Before any policy has arrived. */
  noPolicyMode: FailureMode;
  /** RateLimit fields to send (RATELIMIT_HEADERS); draft-10 when omitted. */
  headerStyle?: HeaderStyle;
  /** Hashes a counted value (user id, IP) for logs, the same way it is hashed in Redis keys. */
  hashValues: (values: readonly string[]) => string;
  logger: Logger;
  metrics: RateLimitMetrics;
}

/**
 * The ShouldRateLimit decision, free of gRPC: match each descriptor to the policy's
 * rules, count them all in one limiter call, and answer OVER_LIMIT if any is over.
 */
export function createShouldRateLimit(
  deps: RateLimitServiceDeps,
): (request: RateLimitRequest) => Promise<RateLimitResponse> {
  const { logger, metrics } = deps;
  // An attack or an outage must not flood the logs: a few records per rule per interval.
  const exceededLogs = new LogThrottle({ burst: 5, intervalMs: 10_000 });
  const failureLogs = new LogThrottle({ burst: 1, intervalMs: 10_000 });
  const headerStyle = deps.headerStyle ?? 'draft-10';
  const decideFileDomain = createFileDomainDecision({
    limiter: deps.limiter,
    failureMode: deps.failureMode,
    headerStyle,
    hashValues: deps.hashValues,
    logger,
    metrics,
    exceededLogs,
    failureLogs,
  });
  const controlPlane = deps.controlPlane ?? true;

  const failureResult = (mode: FailureMode): DecisionResult => (mode === 'deny' ? 'failure_denied' : 'failure_allowed');

  const logExceeded = (entries: readonly DescriptorEntry[], match: RuleMatch, decision: LimitDecision) => {
    const slot = exceededLogs.take(match.rule.id);
    if (!slot) return;
    const counted = new Set(match.rule.counted);
    logger.warn(
      {
        category: 'security',
        event_type: 'rate_limit_exceeded',
        rule_id: match.rule.id,
        // Values the rule counts by identify a person (user id, IP): hashed as in Redis.
        descriptor: entries.map((e, i) => ({
          key: e.key,
          value: counted.has(i) ? `hash:${deps.hashValues([e.value])}` : e.value,
        })),
        blocked: decision.blocked,
        shadow_mode: match.rule.shadow,
        algorithm: match.rule.algorithm,
        limit: match.rule.requestsPerWindow,
        window_seconds: match.rule.windowSeconds,
        retry_after: decision.resetSeconds,
        suppressed: slot.suppressed,
      },
      match.rule.shadow ? 'rate limit exceeded (shadow mode: allowed)' : 'rate limit exceeded',
    );
  };

  const decide = async (request: RateLimitRequest): Promise<RateLimitResponse> => {
    const count = request.descriptors.length;
    // Each domain has one owner: a file, or the control plane (a file naming its domain is refused).
    const fileDomain = deps.fileDomains?.().get(request.domain);
    if (fileDomain) return decideFileDomain(fileDomain, request);
    const policy = deps.policy();
    if (!policy && !controlPlane) return undecidedResponse(request.descriptors.map(() => false));
    if (!policy) {
      const deny = deps.noPolicyMode === 'deny';
      metrics.decisions.inc({ rule: '', result: failureResult(deps.noPolicyMode) }, count);
      const slot = failureLogs.take('no_policy');
      if (slot) {
        logger.warn(
          { category: 'technical', event_type: 'ratelimit_no_policy', failure_mode: deps.noPolicyMode, ...slot },
          `no rate-limit policy received yet; ${deny ? 'refusing' : 'allowing'} requests`,
        );
      }
      return undecidedResponse(request.descriptors.map(() => deny));
    }
    if (request.domain !== policy.domain) return undecidedResponse(request.descriptors.map(() => false));

    // A descriptor's `limit` override replaces its rules only where the definition allows it.
    // A descriptor's own hits_addend (Envoy 1.40) replaces the request's for its rules.
    const descriptors = request.descriptors;
    const matches: Array<ReadonlyArray<RuleMatch & { addend?: number }>> = new Array(descriptors.length);
    const checks: Array<RuleMatch & { addend?: number }> = [];
    for (let d = 0; d < descriptors.length; d++) {
      const descriptor = descriptors[d] as (typeof descriptors)[number];
      const override =
        policy.allowLimitOverride && descriptor.limit
          ? overrideRule(policy.domain, descriptor.entries, descriptor.limit)
          : undefined;
      const found = override ? [override] : policy.match(descriptor.entries);
      const addend = descriptor.hitsAddend;
      const own = addend === undefined ? found : found.map((m) => ({ ...m, addend }));
      matches[d] = own;
      for (const m of own) checks.push(m);
    }
    if (checks.length === 0) return decidedResponse(matches.map(noDecisions), headerStyle);

    let decisions: LimitDecision[];
    try {
      decisions = await deps.limiter.hit(checks, request.hitsAddend);
    } catch (error) {
      const mode = deps.failureMode();
      const answer = failureAnswer(mode);
      const result = failureResult(answer);
      for (const check of checks) metricsOf(check.rule).results[result].count++;
      const slot = failureLogs.take('limiter');
      if (slot) {
        logger.error(
          {
            category: 'technical',
            event_type: 'ratelimit_backend_error',
            failure_mode: mode,
            error_code: failureCode(error),
            error_details: failureMessage(error),
            ...slot,
          },
          `rate-limit store failed; ${answer === 'deny' ? 'refusing' : 'allowing'} requests`,
        );
      }
      // Shadow rules never refuse, not even in deny mode.
      return undecidedResponse(matches.map((m) => answer === 'deny' && m.some((x) => !x.rule.shadow)));
    }
    const hits = request.hitsAddend > 0 ? request.hitsAddend : 1;

    let next = 0;
    const perDescriptor: LimitDecision[][] = new Array(matches.length);
    for (let d = 0; d < matches.length; d++) {
      const descriptorMatches = matches[d] as ReadonlyArray<RuleMatch & { addend?: number }>;
      const reported: LimitDecision[] = [];
      for (const match of descriptorMatches) {
        const decision = decisions[next++] as LimitDecision;
        // Not decided (another rule's refusal came from the local cache): not reported.
        if (decision.skipped) continue;
        const rule = match.rule;
        const perRule = metricsOf(rule);
        countHits(perRule.stats, decision, match.addend ?? hits, rule.shadow);
        const shadow = decision.overLimit && rule.shadow;
        const result: DecisionResult = shadow
          ? 'shadow_mode'
          : decision.blocked
            ? 'blocked'
            : decision.overLimit
              ? 'over_limit'
              : 'ok';
        perRule.results[result].count++;
        if (decision.overLimit) logExceeded(descriptors[d]?.entries ?? [], match, decision);
        // A shadow rule's refusal is measured and logged, and answered OK.
        reported.push(shadow ? { ...decision, overLimit: false, blocked: false } : decision);
      }
      perDescriptor[d] = reported;
    }
    return decidedResponse(perDescriptor, headerStyle);
  };

  // A rule's metric entries, found once (rules live as long as their policy).
  const perRuleMetrics = new WeakMap<CompiledRule, RuleMetrics>();
  const metricsOf = (rule: CompiledRule): RuleMetrics => {
    let found = perRuleMetrics.get(rule);
    if (!found) {
      found = ruleMetrics(metrics, rule.domain, rule.id);
      perRuleMetrics.set(rule, found);
    }
    return found;
  };

  const { requestDurationOk, requestDurationOverLimit } = metrics;
  return async (request) => {
    const started = performance.now();
    const response = await decide(request);
    (response.overallCode === Code.OVER_LIMIT ? requestDurationOverLimit : requestDurationOk).observe(
      (performance.now() - started) / 1000,
    );
    return response;
  };
}

const noDecisions = (): LimitDecision[] => [];

/** The grpc-js implementation of envoy.service.ratelimit.v3.RateLimitService. */
export function createRateLimitServer(deps: RateLimitServiceDeps): RateLimitServiceServer {
  const shouldRateLimit = createShouldRateLimit(deps);
  return {
    shouldRateLimit: (call, callback) => {
      shouldRateLimit(call.request).then(
        (response) => callback(null, response),
        (error: unknown) => {
          // Only a bug gets here (store failures are answered by the failure mode);
          // Envoy then applies its own failure_mode_deny.
          deps.logger.error(
            { category: 'technical', event_type: 'ratelimit_internal_error', error_details: String(error) },
            'ShouldRateLimit failed',
          );
          const failure: Partial<ServiceError> = { code: status.INTERNAL, details: 'rate-limit decision failed' };
          callback(failure);
        },
      );
    },
  };
}
