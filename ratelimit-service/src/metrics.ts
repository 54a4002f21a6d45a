import { Counter, Gauge, type Metric, type Registry } from 'prom-client';
import type { BreakerState } from './limiter/breaker';
import type { LimitDecision } from './limiter/types';

export type DecisionResult = 'ok' | 'over_limit' | 'blocked' | 'shadow_mode' | 'failure_allowed' | 'failure_denied';

/** A rule within its limit but with at most this share of it left is "near" it (envoyproxy/ratelimit's 0.8). */
export const nearLimitRatio = 0.8;

export const breakerStates: readonly BreakerState[] = ['closed', 'open', 'half_open'];
export const modes = ['redis', 'allow', 'deny', 'local'] as const;

// Label values are bounded: `rule` is a policy rule id or a file limit's stats key (the
// request's own values appear only where a file asks for them with detailed_metric or
// value_to_metric, as in envoyproxy/ratelimit); `domain` is one of the configured domains.

export function createRateLimitMetrics(
  registry: Registry,
  opts: {
    redisReady?: () => boolean;
    breakerState?: () => BreakerState;
    modeInForce?: () => (typeof modes)[number];
    knownBlocks?: () => number;
  } = {},
) {
  const registers = [registry];
  // envoyproxy/ratelimit's per-rule stats, counted in hits (hits_addend), not calls. The hot
  // path adds to plain numbers (one map lookup per rule); the counters read them when scraped,
  // so no label set is hashed per request. As many entries as label sets (bounded, see above).
  const stats = new Map<string, RuleStats>();
  const ruleCounters = (domain: string, rule: string): RuleStats => {
    const key = `${domain}\u0000${rule}`;
    let found = stats.get(key);
    if (!found) {
      found = { labels: { domain, rule }, hits: [0, 0, 0, 0, 0, 0] };
      stats.set(key, found);
    }
    return found;
  };
  const perRule = (name: string, help: string, column: number) =>
    new Counter({
      name,
      help,
      labelNames: ['domain', 'rule'] as const,
      registers,
      collect() {
        this.reset();
        for (const entry of stats.values()) {
          const value = entry.hits[column] as number;
          if (value > 0) this.inc(entry.labels, value);
        }
      },
    });
  const totalHits = perRule(
    'sekisho_ratelimit_total_hits_total',
    'Hits counted against a rule (hits_addend of each request).',
    column.totalHits,
  );
  const overLimit = perRule(
    'sekisho_ratelimit_over_limit_total',
    'Hits a rule refused (blocks included), whoever decided: Redis, the local cache or the local limiter.',
    column.overLimit,
  );
  const nearLimit = perRule(
    'sekisho_ratelimit_near_limit_total',
    `Hits within a rule's limit with less than ${Math.round((1 - nearLimitRatio) * 100)}% of it left.`,
    column.nearLimit,
  );
  const withinLimit = perRule(
    'sekisho_ratelimit_within_limit_total',
    "Hits within a rule's limit.",
    column.withinLimit,
  );
  const shadowMode = perRule(
    'sekisho_ratelimit_shadow_mode_total',
    'Hits a shadow-mode rule would have refused (answered OK).',
    column.shadowMode,
  );
  const overLimitWithLocalCache = perRule(
    'sekisho_ratelimit_over_limit_with_local_cache_total',
    'Hits refused from the local cache of keys known to be over their limit or blocked, without Redis.',
    column.overLimitWithLocalCache,
  );
  // Rule evaluations by result: summed in a map on the hot path, read when scraped (as above).
  const decisionCounts = new Map<string, { labels: { rule: string; result: DecisionResult }; count: number }>();
  new Counter({
    name: 'sekisho_ratelimit_decisions_total',
    help: 'Rule evaluations by rule id and result (ok, over_limit, blocked, shadow_mode, failure_allowed, failure_denied).',
    labelNames: ['rule', 'result'] as const,
    registers,
    collect() {
      this.reset();
      for (const entry of decisionCounts.values()) this.inc(entry.labels, entry.count);
    },
  });
  /** The running count of one (rule, result): found once per rule by callers that cache it. */
  const decisionEntry = (rule: string, result: DecisionResult): { count: number } => {
    const key = `${rule}\u0000${result}`;
    let entry = decisionCounts.get(key);
    if (!entry) {
      entry = { labels: { rule, result }, count: 0 };
      decisionCounts.set(key, entry);
    }
    return entry;
  };
  const decisions = {
    inc(labels: { rule: string; result: DecisionResult }, value = 1): void {
      decisionEntry(labels.rule, labels.result).count += value;
    },
    entry: decisionEntry,
  };
  return {
    ruleCounters,
    decisions,
    // envoyproxy/ratelimit's per-rule stats, counted in hits (hits_addend), not calls.
    totalHits,
    overLimit,
    nearLimit,
    withinLimit,
    shadowMode,
    overLimitWithLocalCache,
    redisErrors: new Counter({
      name: 'sekisho_ratelimit_redis_errors_total',
      help: 'Redis round trips that failed (error, timeout, not connected); calls the open breaker kept from Redis are not counted.',
      registers,
    }),
    // The labelled children are looked up once, not per call.
    ...redisDurations(registers),
    redisBatchSize: new FixedSeriesHistogram({
      name: 'sekisho_ratelimit_redis_batch_size',
      help: 'Decisions carried by one script call (the requests of one event-loop turn, per slot on a cluster).',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers,
    }).series({}),
    ...requestDurations(registers),
    blocksLearned: new Counter({
      name: 'sekisho_ratelimit_blocks_learned_total',
      help: 'Blocks another replica started, learned from their announcement (new to this replica).',
      registers,
    }),
    blocksLoaded: new Counter({
      name: 'sekisho_ratelimit_blocks_loaded_total',
      help: "Active blocks read from Redis's block indexes at start and after the announcement subscriber reconnected.",
      registers,
    }),
    localCacheEvictions: new Counter({
      name: 'sekisho_ratelimit_local_cache_evictions_total',
      help: 'Live entries (blocks, keys over their limit) the full local cache dropped, the soonest-expiring first.',
      registers,
    }),
    knownBlocks: new Gauge({
      name: 'sekisho_ratelimit_known_blocks',
      aggregator: 'max',
      help: 'Active blocks this replica holds (its own and those learned from the others), answered without Redis.',
      registers,
      collect() {
        if (opts.knownBlocks) this.set(opts.knownBlocks());
      },
    }),
    policyInfo: new Gauge({
      name: 'sekisho_ratelimit_policy_info',
      aggregator: 'first',
      help: 'The policy in force: 1 for its version and domain.',
      labelNames: ['version', 'domain'] as const,
      registers,
    }),
    policyLoadError: new Gauge({
      name: 'sekisho_ratelimit_policy_load_error',
      aggregator: 'max',
      help: "1 while the control plane's last policy was refused (NACKed; the one before stays in force), else 0.",
      registers,
    }),
    policyRules: new Gauge({
      name: 'sekisho_ratelimit_policy_rules',
      aggregator: 'first',
      help: 'Rules in the policy in force.',
      registers,
    }),
    redisUp: new Gauge({
      name: 'sekisho_ratelimit_redis_up',
      aggregator: 'min',
      help: '1 while the Redis connection is ready.',
      registers,
      collect() {
        if (opts.redisReady) this.set(opts.redisReady() ? 1 : 0);
      },
    }),
    breakerState: new Gauge({
      name: 'sekisho_ratelimit_redis_breaker_state',
      aggregator: 'max',
      help: "The Redis circuit breaker's state: 1 for the current one (closed, open, half_open).",
      labelNames: ['state'] as const,
      registers,
      collect() {
        if (!opts.breakerState) return;
        const current = opts.breakerState();
        for (const state of breakerStates) this.set({ state }, state === current ? 1 : 0);
      },
    }),
    modeInForce: new Gauge({
      name: 'sekisho_ratelimit_mode',
      aggregator: 'max',
      help: 'How decisions are made now: 1 for redis, or for the failure mode (allow, deny, local) while Redis fails or the breaker is open.',
      labelNames: ['mode'] as const,
      registers,
      collect() {
        if (!opts.modeInForce) return;
        const current = opts.modeInForce();
        for (const mode of modes) this.set({ mode }, mode === current ? 1 : 0);
      },
    }),
  };
}

export type RateLimitMetrics = ReturnType<typeof createRateLimitMetrics>;

function redisDurations(registers: Registry[]) {
  const histogram = new FixedSeriesHistogram({
    name: 'sekisho_ratelimit_redis_duration_seconds',
    help: 'Redis round trip of one script call (a batch of decisions), by outcome (ok, error).',
    buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
    registers,
  });
  return {
    redisDurationOk: histogram.series({ outcome: 'ok' }),
    redisDurationError: histogram.series({ outcome: 'error' }),
  };
}

function requestDurations(registers: Registry[]) {
  const histogram = new FixedSeriesHistogram({
    name: 'sekisho_ratelimit_request_duration_seconds',
    help: 'Time to answer ShouldRateLimit, by overall code.',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
    registers,
  });
  return {
    requestDurationOk: histogram.series({ code: 'ok' }),
    requestDurationOverLimit: histogram.series({ code: 'over_limit' }),
  };
}

/** One label set of a FixedSeriesHistogram. */
export interface HistogramSeries {
  observe(value: number): void;
}

interface SeriesState {
  readonly labels: Readonly<Record<string, string>>;
  /** Per bucket (not cumulative), then the count above the last bound. */
  readonly counts: number[];
  sum: number;
  count: number;
}

/**
 * A Prometheus histogram whose label sets are fixed when it is made, for the hot path:
 * observe() finds a bucket and adds to plain numbers. (prom-client's observe, a labelled
 * child's too, converts and hashes the label set on every call.) It registers as a metric of
 * its own and is exposed, and summed over workers, exactly as a prom-client Histogram is.
 */
export class FixedSeriesHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  private readonly bounds: readonly number[];
  private readonly all: SeriesState[] = [];

  constructor(opts: { name: string; help: string; buckets: readonly number[]; registers: Registry[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.bounds = [...opts.buckets].sort((a, b) => a - b);
    for (const registry of opts.registers) registry.registerMetric(this as unknown as Metric);
  }

  series(labels: Readonly<Record<string, string>>): HistogramSeries {
    const state: SeriesState = { labels, counts: new Array(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
    this.all.push(state);
    const { bounds } = this;
    return {
      observe(value: number) {
        let i = 0;
        while (i < bounds.length && value > (bounds[i] as number)) i++;
        (state.counts[i] as number)++;
        state.sum += value;
        state.count++;
      },
    };
  }

  reset(): void {
    for (const state of this.all) {
      state.counts.fill(0);
      state.sum = 0;
      state.count = 0;
    }
  }

  /** prom-client's MetricObjectWithValues of a histogram: buckets (cumulative, le), sum, count per label set. */
  async get() {
    const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
    for (const { labels, counts, sum, count } of this.all) {
      let cumulative = 0;
      this.bounds.forEach((bound, i) => {
        cumulative += counts[i] as number;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
      });
      values.push(
        { metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count },
        { metricName: `${this.name}_sum`, labels: { ...labels }, value: sum },
        { metricName: `${this.name}_count`, labels: { ...labels }, value: count },
      );
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** Columns of RuleStats.hits. */
const column = {
  totalHits: 0,
  overLimit: 1,
  nearLimit: 2,
  withinLimit: 3,
  shadowMode: 4,
  overLimitWithLocalCache: 5,
} as const;

export interface RuleStats {
  readonly labels: { domain: string; rule: string };
  /** Running totals, indexed by `column`. */
  readonly hits: number[];
}

/** A rule's metric entries, looked up once by callers that keep them per rule: no label set is built or hashed per request. */
export interface RuleMetrics {
  readonly stats: RuleStats;
  readonly results: Readonly<Record<DecisionResult, { count: number }>>;
}

export function ruleMetrics(metrics: RateLimitMetrics, domain: string, rule: string): RuleMetrics {
  const entry = (result: DecisionResult) => metrics.decisions.entry(rule, result);
  return {
    stats: metrics.ruleCounters(domain, rule),
    results: {
      ok: entry('ok'),
      over_limit: entry('over_limit'),
      blocked: entry('blocked'),
      shadow_mode: entry('shadow_mode'),
      failure_allowed: entry('failure_allowed'),
      failure_denied: entry('failure_denied'),
    },
  };
}

/**
 * The per-rule stats of one decided rule (stats looked up once per rule). `shadow`: a shadow rule (its refusal counts
 * as shadow_mode, and as over_limit too, as envoyproxy/ratelimit counts it).
 */
export function countHits(stats: RuleStats, decision: LimitDecision, hits: number, shadow: boolean): void {
  const counts = stats.hits;
  (counts[column.totalHits] as number) += hits;
  if (decision.overLimit) {
    (counts[column.overLimit] as number) += hits;
    if (shadow) (counts[column.shadowMode] as number) += hits;
    if (decision.source === 'cache') (counts[column.overLimitWithLocalCache] as number) += hits;
    return;
  }
  (counts[column.withinLimit] as number) += hits;
  if (decision.remaining < decision.rule.requestsPerWindow * (1 - nearLimitRatio))
    (counts[column.nearLimit] as number) += hits;
}
