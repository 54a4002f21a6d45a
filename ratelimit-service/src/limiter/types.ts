/** Milliseconds since the epoch; injected so tests can move time. */
export type Clock = () => number;

/** What the limiter needs of a rule (a compiled policy rule satisfies it). */
export interface LimitRule {
  readonly id: string;
  readonly requestsPerWindow: number;
  readonly windowSeconds: number;
  readonly blockSeconds: number;
}

/** One rule to count for one descriptor: the rule and the values it is counted by. */
export interface LimitCheck {
  readonly rule: LimitRule;
  readonly values: readonly string[];
}

export interface LimitDecision {
  readonly rule: LimitRule;
  /** The request must be refused because of this rule. */
  readonly overLimit: boolean;
  /** Refused because an earlier excess started a block (block_seconds), not by this window's count. */
  readonly blocked: boolean;
  readonly remaining: number;
  /** Seconds until this rule lets requests through again: end of the window, or of the block. */
  readonly resetSeconds: number;
}

export interface Limiter {
  /** Counts the request against every check at once; results in the order of the checks. */
  hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]>;
}

/** One counter the store must increment, with what it needs to expire and block it. */
export interface CounterRequest {
  readonly counterKey: string;
  readonly blockKey: string;
  readonly limit: number;
  readonly windowSeconds: number;
  readonly blockSeconds: number;
}

export type CounterResult =
  /** A block key exists: nothing was counted. */
  | { readonly blocked: true; readonly blockTtlSeconds: number }
  /** Counted; blockTtlSeconds > 0 when this increment exceeded the limit and started a block. */
  | { readonly blocked: false; readonly count: number; readonly blockTtlSeconds: number };

/**
 * The storage a fixed-window limiter needs. All counters of one call are handled
 * atomically and in one round trip; a failure rejects the whole call.
 */
export interface CounterStore {
  increment(counters: readonly CounterRequest[], addend: number): Promise<CounterResult[]>;
}
