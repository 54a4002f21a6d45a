import type { CircuitBreaker } from './breaker';
import { blockKey, counterKey, type KeyTag, ruleDefinition } from './keys';
import type { LocalCache } from './local-cache';
import type { LocalLimiter } from './local-limiter';
import type { LimitCheck, LimitDecision, Limiter } from './types';

/**
 * What to answer when Redis cannot: `allow` everything (envoyproxy/ratelimit's stance),
 * `deny` everything, or decide with this replica's `local` limiter (every limit divided by
 * the expected replica count, every known block kept).
 */
export type StoreFailureMode = 'allow' | 'deny' | 'local';

/** Which way decisions are being made now: through Redis, or by the failure mode (its last call failed, or the breaker is open). */
export type ModeInForce = 'redis' | StoreFailureMode;

/** The store gave no decision and the mode is allow or deny: the caller answers by the mode. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
  constructor(
    /** `breaker_open`: Redis was not even asked; `store_error`: it failed or timed out. */
    readonly reason: 'breaker_open' | 'store_error',
    override readonly cause?: unknown,
  ) {
    super(
      reason === 'breaker_open'
        ? 'the Redis circuit breaker is open'
        : `rate-limit store failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    );
  }
}

/**
 * The answer to give when the limiter throws: a StoreUnavailableError carries an allow or deny
 * mode's refusal to decide; anything else is a bug, answered by the configured mode (`local`
 * then allows: it has no decision to keep).
 */
export const failureAnswer = (mode: StoreFailureMode): 'allow' | 'deny' => (mode === 'deny' ? 'deny' : 'allow');

/** What went wrong, for the log: the store's own error rather than the wrapper's. */
export function failureMessage(error: unknown): string {
  const cause = error instanceof StoreUnavailableError && error.reason === 'store_error' ? error.cause : error;
  return cause instanceof Error ? cause.message : String(cause);
}

/** The RedisFault code (REDIS_TIMEOUT, REDIS_READONLY, …) behind a store failure, when there is one. */
export function failureCode(error: unknown): string | undefined {
  const cause = error instanceof StoreUnavailableError && error.reason === 'store_error' ? error.cause : error;
  if (typeof cause !== 'object' || cause === null || !('code' in cause)) return undefined;
  return typeof cause.code === 'string' ? cause.code : undefined;
}

/**
 * The one answer of the open breaker: frozen, built once (the breaker-open path runs for every
 * request of an outage, and needs no stack of its own).
 */
const breakerOpen: StoreUnavailableError = Object.freeze(new StoreUnavailableError('breaker_open'));

/**
 * The limiter the service uses: the local cache of known refusals first (answered without
 * Redis), then Redis behind the circuit breaker, then the failure mode: `local` decides with
 * the LocalLimiter, `allow` and `deny` throw StoreUnavailableError for the caller to answer.
 */
export class ResilientLimiter implements Limiter {
  private lastStoreOk = true;
  /**
   * The store's last failure: the requests of one failed batch (one round trip) reject with the
   * same fault, and the breaker counts it once, as one failed round trip.
   */
  private lastFailure: unknown;

  constructor(
    private readonly opts: {
      store: Limiter;
      breaker: CircuitBreaker;
      cache: LocalCache;
      local: LocalLimiter;
      hashValues: (values: readonly string[]) => string;
      mode: () => StoreFailureMode;
      /** The Redis key layout: blocks are cached under Redis's block key, as replicas announce them. */
      keyTag?: KeyTag;
    },
  ) {}

  modeInForce(): ModeInForce {
    return this.opts.breaker.state === 'closed' && this.lastStoreOk ? 'redis' : this.opts.mode();
  }

  async hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    const { breaker } = this.opts;
    const addend = hitsAddend > 0 ? hitsAddend : 1;
    const cached = this.fromCache(checks, addend);
    if (cached) return cached;

    const { allowed } = breaker.acquire();
    let failure: unknown;
    if (allowed) {
      const started = performance.now();
      try {
        const decisions = await this.opts.store.hit(checks, hitsAddend);
        breaker.success();
        this.lastStoreOk = true;
        this.learn(checks, decisions, addend, performance.now() - started);
        return decisions;
      } catch (error) {
        // The other requests of a failed batch bring the same fault: one failed round trip.
        if (error !== this.lastFailure) breaker.failure();
        this.lastFailure = error;
        this.lastStoreOk = false;
        failure = error;
      }
    }
    if (this.opts.mode() === 'local') return this.opts.local.decide(checks, hitsAddend);
    if (!allowed) throw breakerOpen;
    throw new StoreUnavailableError('store_error', failure);
  }

  /**
   * The answer when an enforced rule is known to refuse the request: the cached refusals, and
   * `skipped` decisions for the other checks (not asked: a refused request is not counted).
   */
  private fromCache(checks: readonly LimitCheck[], addend: number): LimitDecision[] | undefined {
    const { cache } = this.opts;
    if (cache.size === 0) return undefined;
    let refused = false;
    const decisions = checks.map(({ rule, values, addend: own }): LimitDecision => {
      const hash = this.opts.hashValues(values);
      const blockedFor = cache.refusedFor(blockKey(rule, hash, this.opts.keyTag), 1, ruleDefinition(rule));
      const overFor = blockedFor > 0 ? 0 : cache.refusedFor(counterKey(rule, hash), own ?? addend);
      const ms = blockedFor || overFor;
      if (ms === 0) return { rule, overLimit: false, blocked: false, remaining: 0, resetSeconds: 1, skipped: true };
      if (!rule.advisory) refused = true;
      return {
        rule,
        overLimit: true,
        blocked: blockedFor > 0,
        remaining: 0,
        resetSeconds: Math.max(1, Math.ceil(ms / 1000)),
        resetMs: ms,
        source: 'cache',
      };
    });
    return refused ? decisions : undefined;
  }

  /** Remembers Redis's refusals of enforced rules until they end (less the round trip: never late). */
  private learn(checks: readonly LimitCheck[], decisions: readonly LimitDecision[], addend: number, rttMs: number) {
    decisions.forEach((d, i) => {
      if (!d.overLimit || d.rule.advisory || d.resetMs === undefined) return;
      const check = checks[i];
      const hash = this.opts.hashValues(check?.values ?? []);
      const block = blockKey(d.rule, hash, this.opts.keyTag);
      if (d.blocked) this.opts.cache.remember(block, d.resetMs - rttMs, 1, ruleDefinition(d.rule));
      else {
        if (d.rule.blockSeconds > 0)
          this.opts.cache.remember(block, d.rule.blockSeconds * 1000 - rttMs, 1, ruleDefinition(d.rule));
        this.opts.cache.remember(counterKey(d.rule, hash), d.resetMs - rttMs, check?.addend ?? addend);
      }
    });
  }
}
