/** Milliseconds since the epoch. */
export type Clock = () => number;

/** What the limiter needs of a rule (a compiled policy rule satisfies it). */
export interface LimitRule {
  readonly id: string;
  readonly requestsPerWindow: number;
  readonly windowSeconds: number;
  /** 0 = no block after the limit is exceeded. */
  readonly blockSeconds: number;
  /** The name clients see in RateLimit-Policy (draft-10); default the id. */
  readonly policyName?: string;
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
  /** Whole seconds (≥ 1) until this rule lets requests through again: end of the window, or of the block. */
  readonly resetSeconds: number;
}

/** What the service sees of the limiter: it may reject (store down, timeout), never half-answer. */
export interface Limiter {
  /** Counts the request against every check at once; results in the order of the checks. */
  hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]>;
}
