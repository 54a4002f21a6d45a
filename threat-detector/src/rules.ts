// The rules as counters with thresholds, and what crossing one does. Pure: the engine hands
// in the window sums Redis returned and the time from an injected clock.
import type { Severity, ThreatBlock, ThreatRule, ThreatRules } from '@sekisho/service-kit/threat-contract';
import type { Counter } from './facts';

export interface CounterWindow {
  /** The sliding window, and the bucket it is kept in (its granularity). */
  windowMs: number;
  bucketMs: number;
}

/** Each window is kept in 60 buckets (15 s for 15 min, 1 min for 1 h), at least 1 s each. */
export function counterWindow(windowMs: number): CounterWindow {
  return { windowMs, bucketMs: Math.max(1_000, Math.ceil(windowMs / 60)) };
}

/** The window of a counter under these rules; undefined when the rule that needs it is off. */
export function windowOf(counter: Counter, rules: ThreatRules): CounterWindow | undefined {
  switch (counter) {
    case 'failed_auth':
      return rules.bruteForce && counterWindow(rules.bruteForce.withinMs);
    case 'calls':
      return rules.suspiciousUsage && counterWindow(rules.suspiciousUsage.withinMs);
    case 'bytes':
      return rules.dataExfiltration && counterWindow(rules.dataExfiltration.withinMs);
  }
}

export interface Detection {
  rule: ThreatRule;
  severity: Severity;
  block: ThreatBlock;
}

/**
 * The action when an update moved a counter from at most its threshold to above it: exactly
 * once per crossing, even with several receivers, because Redis adds and sums atomically.
 */
export function detect(
  counter: Counter,
  subject: string,
  before: number,
  after: number,
  rules: ThreatRules,
  nowMs: number,
): Detection | undefined {
  const crossed = (threshold: number) => before <= threshold && after > threshold;
  switch (counter) {
    case 'failed_auth': {
      const rule = rules.bruteForce;
      if (!rule || !crossed(rule.failures)) return undefined;
      const block = {
        kind: 'ip',
        subject,
        rule: 'brute_force',
        severity: 'high',
        untilMs: nowMs + rule.blockMs,
      } as const;
      return { rule: 'brute_force', severity: 'high', block };
    }
    case 'calls': {
      const rule = rules.suspiciousUsage;
      if (!rule || !crossed(rule.calls)) return undefined;
      const block = {
        kind: 'limit',
        subject,
        rule: 'suspicious_usage',
        severity: 'medium',
        untilMs: nowMs + rule.forMs,
        limit: rule.limit,
        windowMs: rule.limitWindowMs,
      } as const;
      return { rule: 'suspicious_usage', severity: 'medium', block };
    }
    case 'bytes': {
      const rule = rules.dataExfiltration;
      if (!rule || !crossed(rule.bytes)) return undefined;
      const block = {
        kind: 'user',
        subject,
        rule: 'data_exfiltration',
        severity: 'critical',
        untilMs: nowMs + rule.blockMs,
      } as const;
      return { rule: 'data_exfiltration', severity: 'critical', block };
    }
  }
}

/**
 * A far sign-in (geo.ts judged it) → the user needs a second factor from a sign-in at or after
 * this one, or a trusted device, for the rule's time. The devices are left empty: putBlock
 * fills them from the user's trusted set in the same Redis step that writes the state.
 */
export function geoAnomalyDetection(
  user: string,
  authTimeS: number,
  rules: ThreatRules,
  nowMs: number,
): Detection | undefined {
  const rule = rules.geoAnomaly;
  if (!rule) return undefined;
  const block = {
    kind: 'auth',
    subject: user,
    rule: 'geo_anomaly',
    severity: 'medium',
    untilMs: nowMs + rule.forMs,
    authTimeS,
    devices: [] as string[],
  } as const;
  return { rule: 'geo_anomaly', severity: 'medium', block };
}
