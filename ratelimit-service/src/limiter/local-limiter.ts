import { blockKey, counterKey, type KeyTag, ruleDefinition } from './keys';
import type { LocalCache } from './local-cache';
import type { Clock, LimitCheck, LimitDecision, Limiter, LimitRule } from './types';

// The `local` failure mode's limiter: the same three algorithms and the same atomic rule as
// the Redis script (decide every check, then count the request against all of them only if
// no enforced rule refused it), in this replica's memory. Each replica sees only its share
// of the traffic, so each limit is divided by the expected number of replicas: with the
// load spread evenly the gateway as a whole still lets about the limit through. Counting
// starts from zero when the outage starts (Redis's counts cannot be read any more), but
// blocks do not: they live in the shared LocalCache, which holds every block Redis reported
// before the outage, and the blocks this limiter starts stay there after Redis returns.

type State =
  | { alg: 'fixed'; start: number; count: number; expires: number }
  | { alg: 'sliding'; stamps: number[]; expires: number }
  | { alg: 'tokenBucket'; tat: number; expires: number };

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

/** A rule's limit on one replica of `replicas`: never below 1, or the rule would refuse everything. */
export const localShare = (limit: number, replicas: number) => Math.max(1, Math.floor(limit / replicas));

interface Plan {
  readonly rule: LimitRule;
  readonly counter: string;
  readonly block: string;
  readonly limit: number;
  readonly addend: number;
  readonly windowMs: number;
  code: 0 | 1 | 2;
  remaining: number;
  resetMs: number;
  blockMs: number;
  used: number;
  start: number;
  tat: number;
  interval: number;
  burst: number;
}

export class LocalLimiter implements Limiter {
  private readonly states = new Map<string, State>();
  private readonly clock: Clock;

  constructor(
    private readonly opts: {
      hashValues: (values: readonly string[]) => string;
      /** Blocks known to this replica (from Redis, or started here); shared with the Redis path. */
      cache: LocalCache;
      /** The expected number of replicas sharing the traffic (RATELIMIT_LOCAL_REPLICAS). */
      replicas: () => number;
      /** Counters kept at most; past that expired ones are swept, then the oldest dropped. */
      maxKeys: number;
      /** The Redis key layout: blocks are cached under Redis's block key, as replicas announce them. */
      keyTag?: KeyTag;
      clock?: Clock;
    },
  ) {
    this.clock = opts.clock ?? Date.now;
  }

  get size(): number {
    return this.states.size;
  }

  /** Forgets the counts (Redis is back and counts again); blocks stay in the cache. */
  reset(): void {
    this.states.clear();
  }

  async hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    return this.decide(checks, hitsAddend);
  }

  /** Synchronous: an in-memory decision has nothing to wait for. */
  decide(checks: readonly LimitCheck[], hitsAddend: number): LimitDecision[] {
    const callAddend = hitsAddend > 0 ? hitsAddend : 1;
    const now = this.clock();
    const replicas = Math.max(1, this.opts.replicas());
    const pending = new Map<string, number>();
    let refused = false;
    const plans = checks.map(({ rule, values, addend: own }): Plan => {
      const addend = own ?? callAddend;
      const hash = this.opts.hashValues(values);
      const limit = localShare(rule.requestsPerWindow, replicas);
      const p: Plan = {
        rule,
        counter: `local:${counterKey(rule, hash)}`,
        block: blockKey(rule, hash, this.opts.keyTag),
        limit,
        addend,
        windowMs: rule.windowSeconds * 1000,
        code: 0,
        remaining: 0,
        resetMs: 0,
        blockMs: 0,
        used: 0,
        start: 0,
        tat: 0,
        interval: 0,
        burst: 0,
      };
      const blockedFor = this.opts.cache.refusedFor(p.block, 1, ruleDefinition(rule));
      const algorithm = rule.algorithm ?? 'fixed';
      if (blockedFor > 0) {
        p.code = 2;
        p.blockMs = blockedFor;
      } else if (algorithm === 'fixed') {
        p.start = now - (now % p.windowMs);
        const state = this.states.get(p.counter);
        p.used = (state?.alg === 'fixed' && state.start === p.start ? state.count : 0) + (pending.get(p.counter) ?? 0);
        p.resetMs = p.start + p.windowMs - now;
        p.remaining = limit - p.used;
        if (p.used + addend > limit) p.code = 1;
        else pending.set(p.counter, (pending.get(p.counter) ?? 0) + addend);
      } else if (algorithm === 'sliding') {
        const stamps = this.slidingStamps(p.counter, now - p.windowMs);
        p.used = stamps.length + (pending.get(p.counter) ?? 0);
        p.remaining = limit - p.used;
        if (p.used + addend > limit) {
          p.code = 1;
          const nth = p.used + addend - limit - 1;
          const stamp = addend > limit ? undefined : stamps[nth];
          p.resetMs = stamp === undefined ? p.windowMs : stamp + p.windowMs - now;
        } else pending.set(p.counter, (pending.get(p.counter) ?? 0) + addend);
      } else {
        p.burst = localShare(rule.burst || rule.requestsPerWindow, replicas);
        p.interval = p.windowMs / limit;
        const state = this.states.get(p.counter);
        let tat = pending.get(p.counter) ?? (state?.alg === 'tokenBucket' ? state.tat : now);
        if (tat < now) tat = now;
        p.tat = tat + addend * p.interval;
        const allowAt = p.tat - p.burst * p.interval;
        p.remaining = Math.floor((now + p.burst * p.interval - tat) / p.interval + 1e-6);
        if (allowAt - now > 1e-3) {
          p.code = 1;
          p.resetMs = allowAt - now;
        } else pending.set(p.counter, p.tat);
      }
      if (p.code !== 0 && !rule.advisory) refused = true;
      return p;
    });

    return plans.map((p): LimitDecision => {
      const { addend } = p;
      const algorithm = p.rule.algorithm ?? 'fixed';
      if (p.code === 2)
        return {
          rule: p.rule,
          overLimit: true,
          blocked: true,
          remaining: 0,
          resetSeconds: seconds(p.blockMs),
          resetMs: p.blockMs,
          source: 'local',
        };
      if (p.code === 0 && !refused) this.count(p, algorithm, addend, now);
      if (p.code === 0 && algorithm === 'tokenBucket')
        p.resetMs = Math.max(0, (refused ? p.tat - addend * p.interval : p.tat) - now);
      if (p.code === 0 && algorithm === 'sliding') {
        const oldest = this.slidingStamps(p.counter, now - p.windowMs)[0];
        p.resetMs = oldest === undefined ? p.windowMs : oldest + p.windowMs - now;
      }
      if (p.code === 1) {
        p.remaining = 0;
        if (p.rule.blockSeconds > 0) {
          p.blockMs = p.rule.blockSeconds * 1000;
          this.opts.cache.remember(p.block, p.blockMs, 1, ruleDefinition(p.rule));
        }
      } else if (!refused) {
        p.remaining =
          algorithm === 'tokenBucket'
            ? Math.floor((now + p.burst * p.interval - p.tat) / p.interval + 1e-6)
            : p.limit - p.used - addend;
      }
      const until = p.blockMs > 0 ? Math.max(p.resetMs, p.blockMs) : p.resetMs;
      return {
        rule: p.rule,
        overLimit: p.code === 1,
        blocked: false,
        remaining: Math.max(0, p.remaining),
        resetSeconds: seconds(until),
        resetMs: until,
        source: 'local',
      };
    });
  }

  private slidingStamps(key: string, after: number): number[] {
    const state = this.states.get(key);
    if (state?.alg !== 'sliding') return [];
    let drop = 0;
    while (drop < state.stamps.length && (state.stamps[drop] as number) <= after) drop++;
    if (drop > 0) state.stamps.splice(0, drop);
    return state.stamps;
  }

  private count(p: Plan, algorithm: string, addend: number, now: number) {
    let state = this.states.get(p.counter);
    if (algorithm === 'fixed') {
      if (state?.alg === 'fixed' && state.start === p.start) state.count += addend;
      else this.store(p.counter, { alg: 'fixed', start: p.start, count: addend, expires: p.start + p.windowMs });
      p.resetMs = p.start + p.windowMs - now;
    } else if (algorithm === 'sliding') {
      if (state?.alg !== 'sliding') {
        state = { alg: 'sliding', stamps: [], expires: 0 };
        this.store(p.counter, state);
      }
      for (let j = 0; j < addend; j++) state.stamps.push(now);
      state.expires = now + p.windowMs;
    } else {
      if (state?.alg === 'tokenBucket') {
        state.tat = p.tat;
        state.expires = p.tat;
      } else this.store(p.counter, { alg: 'tokenBucket', tat: p.tat, expires: p.tat });
    }
  }

  private store(key: string, state: State) {
    this.states.delete(key);
    if (this.states.size >= this.opts.maxKeys) {
      const now = this.clock();
      let scanned = 0;
      for (const [k, s] of this.states) {
        if (s.expires <= now) this.states.delete(k);
        if (++scanned >= 64) break;
      }
      if (this.states.size >= this.opts.maxKeys) {
        const oldest = this.states.keys().next();
        if (!oldest.done) this.states.delete(oldest.value);
      }
    }
    this.states.set(key, state);
  }
}
