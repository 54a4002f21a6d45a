import {
  type RateLimitRequest,
  type RateLimitResponse,
  RateLimitResponse_Code,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import type { RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { createValueHasher } from '@sekisho/ratelimit-service/limiter/keys';
import { LeasedLimiter, type LeaseSettings } from '@sekisho/ratelimit-service/limiter/leased-limiter';
import { defaultMaxBatch } from '@sekisho/ratelimit-service/limiter/redis-limiter';
import type { StoreFailureMode } from '@sekisho/ratelimit-service/limiter/resilient-limiter';
import { createLimiterStack, type LimiterStack } from '@sekisho/ratelimit-service/limiter/stack';
import type { Clock } from '@sekisho/ratelimit-service/limiter/types';
import { type CompiledPolicy, compilePolicy } from '@sekisho/ratelimit-service/policy/compile';
import { type HeaderStyle, headerNames } from '@sekisho/ratelimit-service/response';
import { createShouldRateLimit } from '@sekisho/ratelimit-service/service';
import { descriptorKeys, type UserLimitFamily } from '@sekisho/service-kit/contract';
import type { Logger } from '@sekisho/service-kit/logger';
import type { RedisTopology } from '@sekisho/service-kit/redis-topology';
import { processesPerReplica } from '@sekisho/service-kit/workers';
import { Counter, type Registry } from 'prom-client';

// The per-user limits counted inside the Check (policyServices.rateLimit.perUserLimits:
// ext-authz): the rate-limit service's own decision (its ShouldRateLimit, limiter, Redis keys,
// scripts, breaker, local cache and failure modes), called in-process with the descriptors Envoy
// would have sent it after ext_authz. One gRPC call per request instead of two; the counts land
// in the same Redis keys, so replicas of either service agree on them.

export interface UserLimitsOptions {
  topology: RedisTopology;
  commandTimeoutMs: number;
  /** What to answer while Redis cannot, unless the policy says; the rate-limit service's modes. */
  failureMode: StoreFailureMode;
  /** Hashes user ids in keys and logs: the rate-limit service's RATELIMIT_KEY_SECRET, if it has one. */
  keySecret: string | undefined;
  headerStyle: HeaderStyle;
  /**
   * Leased quota (EXT_AUTHZ_LIMITS_LEASE, _LEASE_MAX): a busy user's fixed-window counts are
   * taken from Redis a lease at a time and answered from memory; fraction 0 = a call per request.
   */
  lease: LeaseSettings;
  logger: Logger;
  registry: Registry;
  clock?: Clock;
}

/** The answer for one allowed request: refused (429) or let through, with the RateLimit fields. */
export interface UserLimitOutcome {
  overLimit: boolean;
  /** RateLimit-Policy / RateLimit (or draft-06's), Retry-After on a refusal. */
  headers: ReadonlyArray<readonly [name: string, value: string]>;
  /** The Retry-After seconds of a refusal. */
  retryAfter: string | undefined;
}

export interface UserLimits {
  /** Compiles the policy's user_limits (absent = none); throws, naming the problem, when invalid. */
  apply(policy: RateLimitPolicy | undefined): void;
  /** Whether a route with these families has anything to count (a rule in force). */
  active(): boolean;
  /** Counts the request for the user; never rejects (a Redis failure is the failure mode's answer). */
  limit(routeId: string | undefined, families: readonly UserLimitFamily[], userId: string): Promise<UserLimitOutcome>;
  /** No rules, or Redis answered once (as the rate-limit service's readiness). */
  ready(): boolean;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

const sekishoLimit = { key: descriptorKeys.limitClass, value: 'authenticated' } as const;

export function createUserLimits(opts: UserLimitsOptions): UserLimits {
  const hashValues = createValueHasher(opts.keySecret);
  let policy: CompiledPolicy | undefined;
  // Started with the first policy that has a rule: no Redis connection for a definition that
  // leaves the per-user limits to the rate-limit service.
  let stack: LimiterStack | undefined;
  let leased: LeasedLimiter | undefined;
  let decide: ((request: RateLimitRequest) => Promise<RateLimitResponse>) | undefined;
  const failureMode = (): StoreFailureMode => policy?.storeFailureMode ?? opts.failureMode;
  const workers = processesPerReplica();

  const start = (): void => {
    const started = createLimiterStack({
      topology: opts.topology,
      commandTimeoutMs: opts.commandTimeoutMs,
      hashValues,
      // One hash tag per domain: ext-authz's Redis is standalone or Sentinel (one master).
      keyTag: 'domain',
      maxBatch: defaultMaxBatch,
      breakerFailures: 5,
      breakerOpenMs: 2_000,
      cacheSize: 100_000,
      localMaxKeys: 100_000,
      failureMode,
      localDivisor: () => (policy?.localReplicas ?? 1) * workers,
      clock: opts.clock,
      logger: opts.logger,
      registry: opts.registry,
    });
    stack = started;
    const leases = new Counter({
      name: 'sekisho_ext_authz_limit_leases_total',
      help: 'Leases of per-user limit windows asked of Redis; granted=false: the window had less than a lease left, or Redis failed',
      labelNames: ['granted'],
      registers: [opts.registry],
    });
    const granted = leases.labels('true');
    const refused = leases.labels('false');
    leased = new LeasedLimiter({
      store: started.limiter,
      fraction: opts.lease.fraction,
      max: opts.lease.max,
      // ~200 bytes a key: a replica's leases stay under ~2 MB however many users it sees.
      maxKeys: 10_000,
      clock: opts.clock,
      hooks: { lease: (ok) => (ok ? granted : refused).inc() },
    });
    decide = createShouldRateLimit({
      policy: () => policy,
      controlPlane: true,
      limiter: leased,
      failureMode,
      // Not used: a request is counted only once a policy with rules is in force.
      noPolicyMode: 'allow',
      headerStyle: opts.headerStyle,
      hashValues,
      logger: opts.logger,
      metrics: started.metrics,
    });
  };

  const limit = async (
    routeId: string | undefined,
    families: readonly UserLimitFamily[],
    userId: string,
  ): Promise<UserLimitOutcome> => {
    const current = policy;
    if (current === undefined || decide === undefined) return notLimited;
    const request: RateLimitRequest = { domain: current.domain, descriptors: [], hitsAddend: 0 };
    for (const family of families) {
      if (family === 'authenticated') {
        request.descriptors.push({ entries: [sekishoLimit, { key: descriptorKeys.user, value: userId }] });
      } else if (routeId !== undefined) {
        request.descriptors.push({
          entries: [
            { key: descriptorKeys.route, value: routeId },
            { key: descriptorKeys.user, value: userId },
          ],
        });
      }
    }
    if (request.descriptors.length === 0) return notLimited;
    return outcomeOf(await decide(request));
  };

  return {
    apply(next) {
      const compiled = next && next.rules.length > 0 ? compilePolicy(next) : undefined;
      policy = compiled;
      if (compiled !== undefined && stack === undefined) start();
    },
    active: () => policy !== undefined,
    limit,
    ready: () => policy === undefined || stack === undefined || stack.connectedOnce(),
    status: () => ({
      rule_count: policy?.rules.length ?? 0,
      redis: stack?.redis.status ?? null,
      redis_breaker: stack?.breaker.state ?? null,
      mode_in_force: stack?.limiter.modeInForce() ?? null,
      failure_mode: failureMode(),
      local_known_blocks: stack?.cache.blocks ?? 0,
      lease: { share: opts.lease.fraction, max: opts.lease.max, keys: leased?.size ?? 0 },
    }),
    close: async () => {
      await stack?.close();
    },
  };
}

const notLimited: UserLimitOutcome = Object.freeze({ overLimit: false, headers: [], retryAfter: undefined });

function outcomeOf(response: RateLimitResponse): UserLimitOutcome {
  const headers = response.responseHeadersToAdd.map((header) => [header.key, header.value] as const);
  const overLimit = response.overallCode === RateLimitResponse_Code.OVER_LIMIT;
  const retryAfter = overLimit ? headers.find(([name]) => name === headerNames.retryAfter)?.[1] : undefined;
  return { overLimit, headers, retryAfter };
}
