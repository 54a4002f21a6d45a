import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { AccountStoreEvents } from './accounts/redis-store';
import type { RefreshEvent } from './firebase/key-store';
import type { ThreatStoreEvents } from './threats/block-store';

/** dry_run: allowed only because the route is in dry-run; code is the denial it would have been. */
export type CheckResult = 'allow' | 'deny' | 'dry_run' | 'error';

export interface ExtAuthzMetrics {
  /** code: 'OK' or the error code of the denial. */
  checkFinished(result: CheckResult, code: string, seconds: number): void;
  /** Internal reason of a failed authentication (bounded set, see DenyReason). */
  authFailed(reason: string): void;
  /** A denial whose log record was left out by the flood limit (event_type, error code). */
  denialLogDropped(event: string, code: string): void;
  keyRefresh(event: RefreshEvent): void;
  policyApplied(version: string, projectId: string): void;
  policyRejected(): void;
  /** 1 while the service accepts the Auth emulator's unsigned tokens (development only). */
  emulatorMode(on: boolean): void;
  accounts: AccountStoreEvents;
  /** A request refused by a threat detector's block (IP_BLOCKED, USER_BLOCKED, RATE_LIMIT_EXCEEDED). */
  threatRefused(code: string, rule: string, severity: string): void;
  /** A token handed to verification (signature or cache): none for a blocked IP. */
  tokenVerified(): void;
  threats: ThreatStoreEvents;
}

export function createExtAuthzMetrics(registry: Registry): ExtAuthzMetrics {
  const registers = [registry];
  // The per-Check series are summed in plain maps on the hot path (no label object hashed per
  // call, as prom-client's inc and observe do) and handed to prom-client when scraped.
  const checkCounts = new Map<CheckResult, Map<string, { count: number }>>();
  new Counter({
    name: 'sekisho_ext_authz_checks_total',
    help: 'Check calls answered, by result (allow, deny, dry_run, error) and code (OK or the error code; for dry_run the denial let through).',
    labelNames: ['result', 'code'] as const,
    registers,
    collect() {
      this.reset();
      for (const [result, byCode] of checkCounts) {
        for (const [code, counted] of byCode) this.inc({ result, code }, counted.count);
      }
    },
  });
  const durationBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
  const durations = new Map<CheckResult, { buckets: number[]; sum: number; count: number }>();
  new Histogram({
    name: 'sekisho_ext_authz_check_duration_seconds',
    help: 'Time to answer a Check call, token verification included.',
    labelNames: ['result'] as const,
    buckets: durationBuckets,
    registers,
    collect() {
      this.reset();
      for (const [result, observed] of durations) {
        this.zero({ result });
        fillHistogram(this, { result }, durationBuckets, observed);
      }
    },
  });
  const authFailureCounts = new Map<string, number>();
  new Counter({
    name: 'sekisho_ext_authz_auth_failures_total',
    help: 'Requests refused for authentication, by internal reason.',
    labelNames: ['reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const [reason, count] of authFailureCounts) this.inc({ reason }, count);
    },
  });
  const refreshes = new Counter({
    name: 'sekisho_ext_authz_key_refreshes_total',
    help: 'Fetches of the Firebase public keys, by result (ok, error) and trigger (initial, scheduled, unknown_kid).',
    labelNames: ['result', 'trigger'] as const,
    registers,
  });
  const keysLoaded = new Gauge({
    name: 'sekisho_ext_authz_keys_loaded',
    aggregator: 'min',
    help: 'Firebase public keys currently held.',
    registers,
  });
  const lastRefreshOk = new Gauge({
    name: 'sekisho_ext_authz_keys_last_refresh_ok',
    aggregator: 'min',
    help: '1 when the last fetch of the Firebase public keys succeeded, else 0.',
    registers,
  });
  const lastRefreshSuccess = new Gauge({
    name: 'sekisho_ext_authz_keys_last_success_timestamp_seconds',
    aggregator: 'min',
    help: 'Unix time of the last successful fetch of the Firebase public keys.',
    registers,
  });
  const policyInfo = new Gauge({
    name: 'sekisho_ext_authz_policy_info',
    aggregator: 'first',
    help: 'The AuthzPolicy in use (value 1), labelled with its version and Firebase project id.',
    labelNames: ['version', 'project_id'] as const,
    registers,
  });
  const denialLogsDropped = new Counter({
    name: 'sekisho_ext_authz_denial_logs_dropped_total',
    help: 'Denial log records left out by the per-cause and per-IP flood limit, by event_type and code.',
    labelNames: ['event_type', 'code'] as const,
    registers,
  });
  const policyUpdates = new Counter({
    name: 'sekisho_ext_authz_policy_updates_total',
    help: 'AuthzPolicy updates received, by result (applied, rejected).',
    labelNames: ['result'] as const,
    registers,
  });
  const emulatorMode = new Gauge({
    name: 'sekisho_ext_authz_emulator_mode',
    aggregator: 'max',
    help: "1 when ext-authz accepts the Firebase Auth emulator's unsigned ID tokens (EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST, development only), else 0.",
    registers,
  });

  const accountsSubscribed = new Gauge({
    name: 'sekisho_ext_authz_accounts_subscribed',
    aggregator: 'min',
    help: '1 while the account change channel is subscribed, else 0 (decisions use the last state).',
    registers,
  });
  const accountSyncs = new Counter({
    name: 'sekisho_ext_authz_accounts_syncs_total',
    help: 'Full loads of the account state from Redis, by result (ok, error) and trigger (initial, scheduled, resubscribed, gap).',
    labelNames: ['result', 'trigger'] as const,
    registers,
  });
  const accountEntries = new Gauge({
    name: 'sekisho_ext_authz_accounts_entries',
    aggregator: 'max',
    help: 'Accounts with any state (disabled, revoked, override) held in memory.',
    registers,
  });
  const accountVersion = new Gauge({
    name: 'sekisho_ext_authz_accounts_version',
    aggregator: 'min',
    help: 'Version of the account state held in memory (Redis counter).',
    registers,
  });
  const accountLastSync = new Gauge({
    name: 'sekisho_ext_authz_accounts_last_sync_timestamp_seconds',
    aggregator: 'min',
    help: 'Unix time of the last successful full load of the account state.',
    registers,
  });
  const prunedRevocations = new Counter({
    name: 'sekisho_ext_authz_accounts_revocations_pruned_total',
    help: 'Revocations removed from the account state by this replica because Firebase revoked them longer ago than EXT_AUTHZ_REVOCATION_RETENTION.',
    registers,
  });
  const pruneRuns = new Counter({
    name: 'sekisho_ext_authz_accounts_prune_runs_total',
    help: 'Runs of the revocation pruning, by result (ok, error).',
    labelNames: ['result'] as const,
    registers,
  });
  const accountChanges = new Counter({
    name: 'sekisho_ext_authz_accounts_changes_total',
    help: 'Account changes applied from the change channel, by field.',
    labelNames: ['field'] as const,
    registers,
  });

  const threatRefusals = new Counter({
    name: 'sekisho_ext_authz_threat_refusals_total',
    help: 'Requests refused because of a threat detector block, by rule, severity and code.',
    labelNames: ['rule', 'severity', 'code'] as const,
    registers,
  });
  const verifications = new Counter({
    name: 'sekisho_ext_authz_token_verifications_total',
    help: 'Tokens handed to verification (cached or not); a request from a blocked IP never gets here.',
    registers,
  });
  const threatsSubscribed = new Gauge({
    name: 'sekisho_ext_authz_threats_subscribed',
    aggregator: 'min',
    help: "1 while the threat detector's block channel is subscribed, else 0 (the blocks held stay enforced).",
    registers,
  });
  const threatSyncs = new Counter({
    name: 'sekisho_ext_authz_threats_syncs_total',
    help: 'Full loads of the threat blocks from Redis, by result.',
    labelNames: ['result'] as const,
    registers,
  });
  const blocksHeld = new Gauge({
    name: 'sekisho_ext_authz_threat_blocks_held',
    aggregator: 'max',
    help: 'Threat blocks in force held in memory by this replica, by kind (ip, user, limit).',
    labelNames: ['kind'] as const,
    registers,
  });
  const threatChanges = new Counter({
    name: 'sekisho_ext_authz_threats_changes_total',
    help: 'Block changes applied from the channel, by op (block, unblock).',
    labelNames: ['op'] as const,
    registers,
  });

  return {
    threatRefused(code, rule, severity) {
      threatRefusals.inc({ code, rule, severity });
    },
    tokenVerified() {
      verifications.inc();
    },
    threats: {
      synced(event) {
        threatSyncs.inc({ result: event.ok ? 'ok' : 'error' });
        blocksHeld.reset();
        for (const [kind, count] of Object.entries(event.byKind)) blocksHeld.set({ kind }, count);
      },
      subscription(subscribed) {
        threatsSubscribed.set(subscribed ? 1 : 0);
      },
      changeApplied(op, byKind) {
        threatChanges.inc({ op });
        blocksHeld.reset();
        for (const [kind, count] of Object.entries(byKind)) blocksHeld.set({ kind }, count);
      },
    },
    accounts: {
      synced(event) {
        accountSyncs.inc({ result: event.ok ? 'ok' : 'error', trigger: event.trigger });
        accountEntries.set(event.entries);
        accountVersion.set(event.version);
        if (event.ok) accountLastSync.set(Date.now() / 1000);
      },
      subscription(subscribed) {
        accountsSubscribed.set(subscribed ? 1 : 0);
      },
      pruned(event) {
        pruneRuns.inc({ result: event.ok ? 'ok' : 'error' });
        prunedRevocations.inc(event.removed);
      },
      changeApplied(field, entries, version) {
        accountChanges.inc({ field });
        accountEntries.set(entries);
        accountVersion.set(version);
      },
    },
    checkFinished(result, code, seconds) {
      let byCode = checkCounts.get(result);
      if (byCode === undefined) {
        byCode = new Map();
        checkCounts.set(result, byCode);
      }
      const counted = byCode.get(code);
      if (counted === undefined) byCode.set(code, { count: 1 });
      else counted.count++;
      let observed = durations.get(result);
      if (observed === undefined) {
        observed = { buckets: durationBuckets.map(() => 0), sum: 0, count: 0 };
        durations.set(result, observed);
      }
      observed.sum += seconds;
      observed.count++;
      // Not cumulative here (prom-client's own layout): the first bucket the value fits in.
      for (let i = 0; i < durationBuckets.length; i++) {
        if (seconds <= (durationBuckets[i] as number)) {
          (observed.buckets[i] as number)++;
          break;
        }
      }
    },
    authFailed(reason) {
      authFailureCounts.set(reason, (authFailureCounts.get(reason) ?? 0) + 1);
    },
    denialLogDropped(event, code) {
      denialLogsDropped.inc({ event_type: event, code });
    },
    keyRefresh(event) {
      refreshes.inc({ result: event.ok ? 'ok' : 'error', trigger: event.trigger });
      keysLoaded.set(event.keyCount);
      lastRefreshOk.set(event.ok ? 1 : 0);
      if (event.ok) lastRefreshSuccess.set(Date.now() / 1000);
    },
    policyApplied(version, projectId) {
      policyInfo.reset();
      policyInfo.set({ version, project_id: projectId }, 1);
      policyUpdates.inc({ result: 'applied' });
    },
    policyRejected() {
      policyUpdates.inc({ result: 'rejected' });
    },
    emulatorMode(on) {
      emulatorMode.set(on ? 1 : 0);
    },
  };
}

/**
 * Puts sums made outside prom-client into a Histogram's series of `labels` (just zeroed): the
 * count per bucket (the first bucket a value fits in), the sum and the count, where prom-client
 * keeps them (its entry per label set: `bucketValues` by upper bound, `sum`, `count`).
 * metrics.test.ts reads the exposition it gives, so a prom-client that keeps them elsewhere fails it.
 */
function fillHistogram(
  histogram: Histogram<string>,
  labels: Record<string, string>,
  bounds: readonly number[],
  observed: { buckets: number[]; sum: number; count: number },
): void {
  const entries = (histogram as unknown as { hashMap: Record<string, HistogramEntry> }).hashMap;
  const entry = Object.values(entries).find((candidate) =>
    Object.entries(labels).every(([name, value]) => candidate.labels[name] === value),
  );
  if (entry === undefined) throw new Error('prom-client histogram: no series for the labels just zeroed');
  bounds.forEach((bound, i) => {
    entry.bucketValues[bound] = observed.buckets[i] as number;
  });
  entry.sum = observed.sum;
  entry.count = observed.count;
}

interface HistogramEntry {
  labels: Record<string, string>;
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}
