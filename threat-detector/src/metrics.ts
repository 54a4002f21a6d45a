import { Counter, Gauge, type Registry } from 'prom-client';
import type { AlertEvents } from './alerts';
import type { DetectorEvents } from './detector';

export function createAlertMetrics(registry: Registry): AlertEvents {
  const alerts = new Counter({
    name: 'sekisho_threat_alerts_total',
    help: 'Security alerts to the webhook, by result (sent, failed after retries, suppressed by the per-minute cap).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  return { alert: (result) => alerts.inc({ result }) };
}

export function createDetectorMetrics(registry: Registry, pendingKeys: () => number): DetectorEvents {
  const registers = [registry];
  const entries = new Counter({
    name: 'sekisho_threat_log_entries_total',
    help: 'HTTP access-log entries received from Envoy.',
    registers,
  });
  const dropped = new Counter({
    name: 'sekisho_threat_facts_dropped_total',
    help: 'Facts dropped because the buffer held THREAT_MAX_PENDING_KEYS subjects (or Redis was away that long).',
    registers,
  });
  const failedLogins = new Counter({
    name: 'failed_login_attempts',
    help: 'Failed authentications seen in the access log, by kind (token: ext-authz 401; login: the login route answered 401/403).',
    labelNames: ['kind'] as const,
    registers,
  });
  const flushes = new Counter({
    name: 'sekisho_threat_flushes_total',
    help: 'Flushes of buffered facts to Redis, by result.',
    labelNames: ['result'] as const,
    registers,
  });
  const flushedCounts = new Counter({
    name: 'sekisho_threat_counts_flushed_total',
    help: 'Counter updates sent to Redis (one per subject and counter per flush).',
    registers,
  });
  const paused = new Gauge({
    name: 'sekisho_threat_detection_paused',
    help: '1 while Redis is unavailable: new detections wait (blocks in force stay enforced by ext-authz).',
    registers,
  });
  const events = new Counter({
    name: 'security_events',
    help: 'Threats detected, by rule and severity.',
    labelNames: ['rule', 'severity'] as const,
    registers,
  });
  const blockedIps = new Counter({
    name: 'blocked_ips',
    help: 'IP blocks put in force by the detector.',
    registers,
  });
  const signIns = new Counter({
    name: 'sekisho_threat_sign_ins_total',
    help: 'Sign-ins (a token with a new auth_time) the geo anomaly rule judged, by result (first, usual, far, second_factor; unlocated: no place known).',
    labelNames: ['result'] as const,
    registers,
  });
  const rulesRejected = new Counter({
    name: 'sekisho_threat_rules_rejected_total',
    help: 'Access-log entries whose rules tag was not valid.',
    registers,
  });
  new Gauge({
    name: 'sekisho_threat_pending_keys',
    help: 'Subjects waiting for the next flush.',
    registers,
    collect() {
      this.set(pendingKeys());
    },
  });
  return {
    entries: (count) => entries.inc(count),
    factsDropped: (count) => dropped.inc(count),
    failedLogin: (kind) => failedLogins.inc({ kind }),
    flushed: (result, counts) => {
      flushes.inc({ result });
      if (result === 'ok') flushedCounts.inc(counts);
    },
    paused: (on) => paused.set(on ? 1 : 0),
    detection: (detection, written) => {
      events.inc({ rule: detection.rule, severity: detection.severity });
      if (written && detection.block.kind === 'ip') blockedIps.inc();
    },
    signIn: (result) => signIns.inc({ result }),
    rulesRejected: () => rulesRejected.inc(),
  };
}
