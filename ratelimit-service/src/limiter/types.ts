/** Milliseconds since the epoch. */
export type Clock = () => number;

/**
 * How a rule counts: `fixed` windows aligned to the epoch (envoyproxy/ratelimit's), a
 * `sliding` window (a log of the accepted requests of the last window), or a `tokenBucket`
 * (GCRA: requestsPerWindow / windowSeconds sustained, `burst` at once).
 */
export type LimitAlgorithm = 'fixed' | 'sliding' | 'tokenBucket';

/** What the limiter needs of a rule (a compiled policy rule satisfies it). */
export interface LimitRule {
  readonly id: string;
  /**
   * The domain the rule belongs to: the hash tag of its keys in the default key layout, so
   * every key of one call lands in one Redis Cluster slot. Unset: one shared tag.
   */
  readonly domain?: string;
  readonly requestsPerWindow: number;
  readonly windowSeconds: number;
  /** 0 = no block after the limit is exceeded. */
  readonly blockSeconds: number;
  /** Default `fixed`. */
  readonly algorithm?: LimitAlgorithm;
  /** tokenBucket only: the bucket's size; default requestsPerWindow. */
  readonly burst?: number;
  /**
   * Its refusal alone does not refuse the request (shadow mode; a file's quota mode), so it
   * never keeps the other rules from counting it. The caller decides what the refusal means.
   */
  readonly advisory?: boolean;
  /** The name clients see in RateLimit-Policy (draft-10); default the id. */
  readonly policyName?: string;
}

/** One rule to count for one descriptor: the rule and the values it is counted by. */
export interface LimitCheck {
  readonly rule: LimitRule;
  readonly values: readonly string[];
  /** Hits this check adds (a descriptor's own hits_addend; 0 = decide only); default the call's. */
  readonly addend?: number;
}

export interface LimitDecision {
  readonly rule: LimitRule;
  /** This rule refuses the request (a shadow rule's refusal is reported here too, and not enforced). */
  readonly overLimit: boolean;
  /** Refused because an earlier excess started a block (block_seconds), not by this window's count. */
  readonly blocked: boolean;
  readonly remaining: number;
  /** Whole seconds (≥ 1) until this rule lets requests through again: end of the window, or of the block. */
  readonly resetSeconds: number;
  /** The same in milliseconds, unrounded, when the limiter knows it (for the local cache). */
  readonly resetMs?: number;
  /**
   * Who decided: Redis (the default), the local cache of known refusals, the local limiter, or
   * a lease of the window taken from Redis earlier (limiter/leased-limiter.ts).
   */
  readonly source?: DecisionSource;
  /**
   * Not decided: another rule's refusal was answered from the local cache, and a refused
   * request is counted by no rule. Left out of the response's statuses, headers and metrics.
   */
  readonly skipped?: boolean;
}

export type DecisionSource = 'redis' | 'cache' | 'local' | 'lease';

/** What the service sees of the limiter: it may reject (store down, timeout), never half-answer. */
export interface Limiter {
  /**
   * Decides every check at once, then counts the request against all of them only if none
   * that is enforced (not shadow) refuses it; results in the order of the checks. (With
   * RATELIMIT_REDIS_KEY_TAG=counter on a cluster: per slot, see limiter/keys.ts.)
   */
  hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]>;
}
