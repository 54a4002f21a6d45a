import type { Clock } from './types';

export type BreakerState = 'closed' | 'open' | 'half_open';

// acquire()'s three answers, shared (it runs for every request).
const pass = Object.freeze({ allowed: true, probe: false });
const refuse = Object.freeze({ allowed: false, probe: false });
const probe = Object.freeze({ allowed: true, probe: true });

export interface BreakerOptions {
  /** Consecutive failures (errors, timeouts) that open the breaker. */
  readonly failureThreshold: number;
  /** How long an open breaker sends nothing to Redis before one probe may go. */
  readonly openMs: number;
  readonly clock?: Clock;
  /** Called on every change of state (metrics, logs). */
  readonly onChange?: (to: BreakerState, from: BreakerState) => void;
}

/**
 * A circuit breaker for the limiter's store, so that a dead or frozen Redis costs a request
 * nothing: after `failureThreshold` consecutive failures it opens and every call is answered
 * by the failure mode at once; after `openMs` one call (the probe) goes to Redis again — a
 * success closes the breaker, a failure opens it for another `openMs`. While the probe is in
 * flight every other call is still answered without Redis.
 */
export class CircuitBreaker {
  private current: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private probing = false;
  private readonly clock: Clock;

  constructor(private readonly opts: BreakerOptions) {
    if (!Number.isInteger(opts.failureThreshold) || opts.failureThreshold < 1)
      throw new Error(`failureThreshold must be a positive integer, got ${opts.failureThreshold}`);
    if (!(opts.openMs > 0)) throw new Error(`openMs must be greater than 0, got ${opts.openMs}`);
    this.clock = opts.clock ?? Date.now;
  }

  get state(): BreakerState {
    return this.current;
  }

  /**
   * May this call go to Redis? `probe` is true for the one call let through a half-open
   * breaker: the caller must report its outcome (success or failure) in every case.
   */
  acquire(): { readonly allowed: boolean; readonly probe: boolean } {
    if (this.current === 'closed') return pass;
    if (this.current === 'open') {
      if (this.clock() - this.openedAt < this.opts.openMs) return refuse;
      this.move('half_open');
    }
    if (this.probing) return refuse;
    this.probing = true;
    return probe;
  }

  /** Redis looks back (a new connection): an open breaker lets the next call probe at once. */
  probeSoon(): void {
    if (this.current === 'open') this.openedAt = Number.NEGATIVE_INFINITY;
  }

  success(): void {
    this.failures = 0;
    this.probing = false;
    if (this.current !== 'closed') this.move('closed');
  }

  failure(): void {
    this.probing = false;
    this.failures++;
    if (this.current === 'half_open' || (this.current === 'closed' && this.failures >= this.opts.failureThreshold)) {
      this.openedAt = this.clock();
      this.move('open');
    }
  }

  private move(to: BreakerState) {
    const from = this.current;
    this.current = to;
    this.opts.onChange?.(to, from);
  }
}
