import {
  type RateLimitRequest,
  type RateLimitResponse,
  RateLimitResponse_RateLimit_Unit as Unit,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import type { Logger } from '@sekisho/service-kit/logger';
import { failureAnswer, failureMessage, type StoreFailureMode } from '../limiter/resilient-limiter';
import type { LimitCheck, LimitDecision, Limiter } from '../limiter/types';
import type { LogThrottle } from '../log-throttle';
import { countHits, type DecisionResult, type RateLimitMetrics, type RuleMetrics, ruleMetrics } from '../metrics';
import type { DescriptorEntry } from '../policy/compile';
import { type FileOutcome, fileDomainResponse, type HeaderStyle, undecidedResponse } from '../response';
import { type CompiledFileDomain, countedValues, type FileLimit, metricLabel, overrideLimit } from './compile';
import type { FileUnit } from './parse';

// ShouldRateLimit for a domain from a configuration file: one limit per descriptor (the one
// at its exact depth), `replaces` and `unlimited` applied before counting, then every counted
// limit in one limiter call, the same limiter as the control plane's rules (fixed windows).

// Envoy's RateLimitResponse.RateLimit.Unit (1.40) has no WEEK: a week is UNKNOWN there, and
// current_limit.name and duration_until_reset describe it.
const protoUnits: Record<FileUnit, Unit> = {
  SECOND: Unit.SECOND,
  MINUTE: Unit.MINUTE,
  HOUR: Unit.HOUR,
  DAY: Unit.DAY,
  WEEK: Unit.UNKNOWN,
  MONTH: Unit.MONTH,
  YEAR: Unit.YEAR,
};

export interface FileDomainDeps {
  limiter: Limiter;
  failureMode: () => StoreFailureMode;
  headerStyle: HeaderStyle;
  hashValues: (values: readonly string[]) => string;
  logger: Logger;
  metrics: RateLimitMetrics;
  exceededLogs: LogThrottle;
  failureLogs: LogThrottle;
}

const none: FileOutcome = { kind: 'none' };
const unlimited: FileOutcome = { kind: 'unlimited' };

export function createFileDomainDecision(
  deps: FileDomainDeps,
): (domain: CompiledFileDomain, request: RateLimitRequest) => Promise<RateLimitResponse> {
  const { metrics, logger } = deps;
  // A limit's metric entries, found once when its label is its stats key (no detailed_metric,
  // no value_to_metric); else per request, by the label the request's values make.
  const perLimitMetrics = new WeakMap<FileLimit, RuleMetrics>();
  const metricsOf = (domain: string, limit: FileLimit, entries: readonly DescriptorEntry[]): RuleMetrics => {
    if (limit.dynamicLabel) return ruleMetrics(metrics, domain, metricLabel(limit, entries));
    let found = perLimitMetrics.get(limit);
    if (!found) {
      found = ruleMetrics(metrics, domain, limit.statKey);
      perLimitMetrics.set(limit, found);
    }
    return found;
  };

  const logExceeded = (limit: FileLimit, entries: readonly DescriptorEntry[], decision: LimitDecision) => {
    const slot = deps.exceededLogs.take(limit.statKey);
    if (!slot) return;
    logger.warn(
      {
        category: 'security',
        event_type: 'rate_limit_exceeded',
        domain: limit.domain,
        rule_id: limit.statKey,
        // Values the file matches by key or wildcard may identify a person: hashed as in Redis.
        descriptor: entries.map((e, i) => ({
          key: e.key,
          value: limit.path[i]?.kind === 'exact' ? e.value : `hash:${deps.hashValues([e.value])}`,
        })),
        shadow_mode: limit.shadowMode,
        limit: limit.requestsPerWindow,
        window_seconds: limit.windowSeconds,
        retry_after: decision.resetSeconds,
        suppressed: slot.suppressed,
      },
      limit.shadowMode ? 'rate limit exceeded (shadow mode: allowed)' : 'rate limit exceeded',
    );
  };

  return async (domain, request) => {
    const descriptors = request.descriptors;
    // A descriptor's `limit` override (Envoy's dynamic limits) wins over the file, as in the reference.
    const limits: Array<FileLimit | undefined> = descriptors.map(
      (d) => (d.limit && overrideLimit(domain.domain, d.entries, d.limit)) || domain.match(d.entries),
    );

    // A limit named in the `replaces` of another limit matching the same request is not applied.
    if (domain.hasReplaces) {
      const replaced = new Set<string>();
      for (const l of limits) if (l) for (const name of l.replaces) replaced.add(name);
      if (replaced.size > 0)
        for (let i = 0; i < limits.length; i++) {
          const l = limits[i];
          if (l && l.name !== '' && replaced.has(l.name)) limits[i] = undefined;
        }
    }

    const checks: LimitCheck[] = [];
    const positions: number[] = [];
    limits.forEach((l, i) => {
      if (!l || l.unlimited) return;
      const d = descriptors[i];
      // A descriptor's own hits_addend (Envoy 1.40) replaces the request's for its limit.
      const values = countedValues(l, d?.entries ?? []);
      checks.push(d?.hitsAddend === undefined ? { rule: l, values } : { rule: l, values, addend: d.hitsAddend });
      positions.push(i);
    });
    const base = limits.map((l) => (l?.unlimited ? unlimited : none));
    if (checks.length === 0) return fileDomainResponse(base, deps.headerStyle);

    let decisions: LimitDecision[];
    try {
      decisions = await deps.limiter.hit(checks, request.hitsAddend);
    } catch (error) {
      const mode = deps.failureMode();
      const answer = failureAnswer(mode);
      const result: DecisionResult = answer === 'deny' ? 'failure_denied' : 'failure_allowed';
      positions.forEach((i) => {
        const l = limits[i] as FileLimit;
        metricsOf(domain.domain, l, descriptors[i]?.entries ?? []).results[result].count++;
      });
      const slot = deps.failureLogs.take('limiter');
      if (slot) {
        logger.error(
          {
            category: 'technical',
            event_type: 'ratelimit_backend_error',
            failure_mode: mode,
            domain: domain.domain,
            error_details: failureMessage(error),
            ...slot,
          },
          `rate-limit store failed; ${answer === 'deny' ? 'refusing' : 'allowing'} requests`,
        );
      }
      // Shadow-mode limits never refuse, not even in deny mode.
      const deny = new Set(answer === 'deny' ? positions.filter((i) => !limits[i]?.shadowMode) : []);
      return undecidedResponse(limits.map((_, i) => deny.has(i)));
    }

    const outcomes = base;
    const hits = request.hitsAddend > 0 ? request.hitsAddend : 1;
    positions.forEach((i, n) => {
      const limit = limits[i] as FileLimit;
      const decision = decisions[n] as LimitDecision;
      // Not decided (another limit's refusal came from the local cache): not reported.
      if (decision.skipped) return;
      const entries = descriptors[i]?.entries ?? [];
      const perLimit = metricsOf(domain.domain, limit, entries);
      const result: DecisionResult = decision.overLimit ? (limit.shadowMode ? 'shadow_mode' : 'over_limit') : 'ok';
      perLimit.results[result].count++;
      countHits(perLimit.stats, decision, checks[n]?.addend ?? hits, limit.shadowMode);
      if (decision.overLimit) logExceeded(limit, entries, decision);
      outcomes[i] = {
        kind: 'decided',
        decision,
        name: limit.name,
        unit: protoUnits[limit.unit],
        shadow: limit.shadowMode,
        quota: limit.quotaMode,
      };
    });
    return fileDomainResponse(outcomes, deps.headerStyle);
  };
}
