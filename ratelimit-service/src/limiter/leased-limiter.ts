import { ruleDefinition } from './keys';
import type { Clock, LimitCheck, LimitDecision, Limiter, LimitRule } from './types';

// Leased quota: a replica takes a block of a counter's window from Redis at once (one
// EVALSHA adding `size` to the counter) and then answers that many requests from memory, so
// a busy key costs one round trip per lease instead of one per request. The next lease is
// taken in the background when half of the current one is spent, so a steady client never
// waits for Redis.
//
// What it keeps exact: a lease is counted in Redis before any of it is spent, so no window
// ever lets more than its limit through, whatever the number of replicas. What it gives up:
// what a replica has leased and not spent when the window ends was counted and never used,
// so a client may be refused up to (replicas × processes × lease size) requests before its
// limit. Hence a lease is a small fraction of the limit, and only where that is safe:
//
// - fixed windows only (a sliding log and a token bucket have no block of the window to
//   lease), with no block_seconds (a lease that does not fit must not start a block) and not
//   advisory (shadow rules count what they would refuse);
// - a rule whose lease would be under 2 is decided in Redis per request, as before;
// - a check with its own addend, or a call adding more than one hit, goes to Redis.
//
// A lease that does not fit (the window has less left than a lease) is not retried in that
// window: the key is decided in Redis per request until the window ends, exactly at the
// limit. A lease expires with its window, a round trip early (its end is measured from when
// the lease was asked for). Only leases Redis granted are spent: an answer of the failure
// mode (the local limiter's, or an allow) is not a lease.

export interface LeaseSettings {
  /** A lease's share of its rule's limit (0 = never lease). */
  fraction: number;
  /** The largest lease, in requests. */
  max: number;
}

export interface LeasedLimiterOptions extends LeaseSettings {
  /** The limiter that decides in Redis (the ResilientLimiter). */
  store: Limiter;
  /** Keys with a lease at most; the least recently leased is dropped (its rest unspent) beyond it. */
  maxKeys: number;
  clock?: Clock;
  hooks?: {
    /** A lease was asked for; `granted` false: the window had less than `size` left, or Redis failed. */
    lease?: (granted: boolean) => void;
  };
}

interface Lease {
  /** Requests left to answer from this lease. */
  tokens: number;
  /** Local clock ms when the window the tokens belong to ends (a round trip early). */
  until: number;
  /** What Redis said is left of the window once the lease was counted. */
  remaining: number;
  windowMs: number;
  /** A lease is being asked for. */
  asking: boolean;
  /** The window had less left than a lease: decide per request until `until`. */
  exhausted: boolean;
  /** Moves when the tokens are replaced by a later window's: a token is given back only to its own. */
  generation: number;
}

/** The lease a rule gets under these settings; 0 = it is decided per request. */
export function leaseSize(rule: LimitRule, settings: LeaseSettings): number {
  if ((rule.algorithm ?? 'fixed') !== 'fixed' || rule.blockSeconds > 0 || rule.advisory) return 0;
  const size = Math.min(settings.max, Math.floor(rule.requestsPerWindow * settings.fraction));
  return size >= 2 ? size : 0;
}

/** What a rule's leases need, computed once per rule object (a policy's rules are reused). */
interface RuleLease {
  /** The lease size; 0 = decided per request. */
  size: number;
  /** The rule as it is: a policy that changes its limit or window starts new leases. */
  keyPrefix: string;
}

export class LeasedLimiter implements Limiter {
  private readonly leases = new Map<string, Lease>();
  private readonly clock: Clock;
  private readonly rules = new WeakMap<LimitRule, RuleLease>();

  private inFlight = 0;

  constructor(private readonly opts: LeasedLimiterOptions) {
    this.clock = opts.clock ?? Date.now;
  }

  /** Keys holding a lease (for /status). */
  get size(): number {
    return this.leases.size;
  }

  /** Leases being asked for now. */
  get asking(): number {
    return this.inFlight;
  }

  async hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    if (hitsAddend > 1 || this.opts.fraction <= 0) return this.opts.store.hit(checks, hitsAddend);
    const now = this.clock();
    // Per check, the lease a token was taken from (spent now, given back if the request is
    // refused); the checks no lease answers go to Redis, with their key's lease if any.
    const taken: Array<Lease | undefined> = new Array(checks.length);
    let remote: LimitCheck[] | undefined;
    let remoteLeases: Array<Lease | undefined> | undefined;
    let leasedAny = false;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i] as LimitCheck;
      const lease = check.addend === undefined ? this.leaseFor(check, now) : undefined;
      if (lease !== undefined && lease.tokens > 0 && lease.until > now) {
        lease.tokens--;
        taken[i] = lease;
        leasedAny = true;
      } else {
        remote ??= [];
        remoteLeases ??= [];
        remote.push(check);
        remoteLeases.push(lease);
      }
    }
    if (remote === undefined || remoteLeases === undefined) return this.merge(checks, taken, [], now);

    // The tokens' generations as they were taken: a token is given back only to its own window.
    const generations = leasedAny ? taken.map((lease) => lease?.generation) : undefined;
    let decided: LimitDecision[];
    try {
      decided = await this.opts.store.hit(remote, hitsAddend);
    } catch (error) {
      if (generations) giveBack(taken, generations);
      throw error;
    }
    seen(remoteLeases, decided);
    if (!generations) return decided;
    if (decided.some((d) => d.overLimit && !d.rule.advisory)) giveBack(taken, generations);
    return this.merge(checks, taken, decided, now);
  }

  /** The checks in their order: the leases' decisions and, for the others, Redis's. */
  private merge(
    checks: readonly LimitCheck[],
    taken: ReadonlyArray<Lease | undefined>,
    decided: readonly LimitDecision[],
    now: number,
  ): LimitDecision[] {
    const out: LimitDecision[] = new Array(checks.length);
    let next = 0;
    for (let i = 0; i < checks.length; i++) {
      const lease = taken[i];
      out[i] = lease ? this.leased((checks[i] as LimitCheck).rule, lease, now) : (decided[next++] as LimitDecision);
    }
    return out;
  }

  /**
   * The key's lease (none when its rule is decided per request), dropped when its window has
   * ended, and asked for when none or half spent.
   */
  private leaseFor(check: LimitCheck, now: number): Lease | undefined {
    const rule = this.ruleLease(check.rule);
    if (rule.size === 0) return undefined;
    const key = check.values.length === 1 ? rule.keyPrefix + check.values[0] : rule.keyPrefix + check.values.join('\n');
    let lease = this.leases.get(key);
    if (lease !== undefined && lease.until <= now && !lease.asking) {
      this.leases.delete(key);
      lease = undefined;
    }
    if (lease === undefined || (!lease.asking && !lease.exhausted && lease.tokens <= rule.size / 2)) {
      lease = this.ask(key, check, rule.size, lease);
    }
    return lease;
  }

  private ruleLease(rule: LimitRule): RuleLease {
    let entry = this.rules.get(rule);
    if (entry === undefined) {
      entry = { size: leaseSize(rule, this.opts), keyPrefix: `${rule.id}\n${ruleDefinition(rule)}\n` };
      this.rules.set(rule, entry);
    }
    return entry;
  }

  private leased(rule: LimitRule, lease: Lease, now: number): LimitDecision {
    const resetMs = Math.max(1, lease.until - now);
    return {
      rule,
      overLimit: false,
      blocked: false,
      // What is left to everyone: the window's rest in Redis and this lease's rest.
      remaining: lease.remaining + lease.tokens,
      resetSeconds: Math.max(1, Math.ceil(resetMs / 1000)),
      resetMs,
      source: 'lease',
    };
  }

  /** Asks Redis for a lease of `size` for this key (in the background); returns the key's lease. */
  private ask(key: string, check: LimitCheck, size: number, current: Lease | undefined): Lease {
    const lease: Lease = current ?? {
      tokens: 0,
      until: 0,
      remaining: 0,
      windowMs: check.rule.windowSeconds * 1000,
      asking: false,
      exhausted: false,
      generation: 0,
    };
    if (current === undefined) {
      if (this.leases.size >= this.opts.maxKeys) {
        const oldest = this.leases.keys().next();
        if (!oldest.done) this.leases.delete(oldest.value);
      }
    } else this.leases.delete(key);
    // Last in the map's order: the key dropped first when the map is full is the least
    // recently leased one (once per lease, not per request).
    this.leases.set(key, lease);
    lease.asking = true;
    this.inFlight++;
    const asked = this.clock();
    this.opts.store.hit([{ rule: check.rule, values: check.values, addend: size }], size).then(
      (decisions) => {
        lease.asking = false;
        this.inFlight--;
        const d = decisions[0];
        // The failure mode's answer (local limiter, cache) is no lease; nor a decision skipped.
        const fromRedis = d !== undefined && d.source === undefined && !d.skipped;
        this.opts.hooks?.lease?.(fromRedis && !d.overLimit);
        if (!fromRedis) return;
        const until = asked + (d.resetMs ?? d.resetSeconds * 1000);
        if (d.overLimit) {
          // Less than a lease left in this window: per request until it ends.
          lease.exhausted = true;
          lease.until = Math.max(lease.until, until);
          return;
        }
        // The same window as the tokens held (their ends differ by round trips only): add them;
        // a later window: the old tokens belonged to a window that has ended.
        if (lease.tokens > 0 && Math.abs(until - lease.until) < lease.windowMs / 2) {
          lease.tokens += size;
          lease.until = Math.min(lease.until, until);
        } else {
          lease.tokens = size;
          lease.until = until;
          lease.exhausted = false;
          lease.generation++;
        }
        lease.remaining = d.remaining;
      },
      () => {
        // Redis failed: the next request asks again (and is decided by the failure mode meanwhile).
        lease.asking = false;
        this.inFlight--;
        this.opts.hooks?.lease?.(false);
      },
    );
    return lease;
  }
}

/** Redis's word on a leased key's rest (a request decided there meanwhile) keeps its lease's estimate current. */
function seen(leases: ReadonlyArray<Lease | undefined>, decided: readonly LimitDecision[]): void {
  for (let i = 0; i < leases.length; i++) {
    const lease = leases[i];
    const d = decided[i];
    if (lease !== undefined && d !== undefined && d.source === undefined && !d.overLimit)
      lease.remaining = Math.min(lease.remaining, d.remaining);
  }
}

/** A refused request's tokens go back to their leases, unless a later window's tokens replaced them. */
function giveBack(taken: ReadonlyArray<Lease | undefined>, generations: ReadonlyArray<number | undefined>): void {
  for (let i = 0; i < taken.length; i++) {
    const lease = taken[i];
    if (lease !== undefined && lease.generation === generations[i]) lease.tokens++;
  }
}
