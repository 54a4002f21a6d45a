import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type DecisionResult = 'ok' | 'over_limit' | 'blocked' | 'shadow_mode' | 'failure_allowed' | 'failure_denied';

export function createRateLimitMetrics(registry: Registry, opts: { redisReady?: () => boolean } = {}) {
  const registers = [registry];
  return {
    decisions: new Counter({
      name: 'sekisho_ratelimit_decisions_total',
      help: 'Rule evaluations by rule id and result (ok, over_limit, blocked, shadow_mode, failure_allowed, failure_denied).',
      labelNames: ['rule', 'result'] as const,
      registers,
    }),
    redisErrors: new Counter({
      name: 'sekisho_ratelimit_redis_errors_total',
      help: 'ShouldRateLimit calls whose Redis round trip failed (error, timeout, not connected).',
      registers,
    }),
    requestDuration: new Histogram({
      name: 'sekisho_ratelimit_request_duration_seconds',
      help: 'Time to answer ShouldRateLimit, by overall code.',
      labelNames: ['code'] as const,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
      registers,
    }),
    policyInfo: new Gauge({
      name: 'sekisho_ratelimit_policy_info',
      help: 'The policy in force: 1 for its version and domain.',
      labelNames: ['version', 'domain'] as const,
      registers,
    }),
    policyRules: new Gauge({
      name: 'sekisho_ratelimit_policy_rules',
      help: 'Rules in the policy in force.',
      registers,
    }),
    redisUp: new Gauge({
      name: 'sekisho_ratelimit_redis_up',
      help: '1 while the Redis connection is ready.',
      registers,
      collect() {
        if (opts.redisReady) this.set(opts.redisReady() ? 1 : 0);
      },
    }),
  };
}

export type RateLimitMetrics = ReturnType<typeof createRateLimitMetrics>;
