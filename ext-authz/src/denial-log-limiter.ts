// Denial records are written at most so often per cause and client IP, and per cause
// overall, so a credential-stuffing burst (thousands of failed tokens a second, from one
// address or from many) costs the log pipeline a bounded number of lines. Metrics still
// count every denial; what is left out is counted and summarised once per window.
//
// Fixed windows, all keys aligned: at a window's end the tables are dropped whole, so
// memory is bounded by the keys of one window (and by maxKeys) and the per-call work is
// two Map lookups. The summary is written when the window ends, by a timer set at the
// window's first drop (a flood that stops still gets its line; a quiet service has no
// timer), or by the next denial if it comes first. The clock and the timer are passed in.

export interface DenialLogLimits {
  /** Records per cause and client IP per window. */
  perClient: number;
  /** Records per cause per window, every client together. */
  perCause: number;
  windowMs: number;
  /** Distinct cause+IP keys kept per window; beyond it new keys count against perCause only. */
  maxKeys?: number;
}

/** What was left out in a window that ended, by cause. */
export type DroppedSummary = ReadonlyMap<string, number>;

/** Runs `run` after `delayMs`; returns what cancels it. */
export type Schedule = (run: () => void, delayMs: number) => () => void;

/** Node's timer, not keeping the process alive for a summary. */
export const realTimer: Schedule = (run, delayMs) => {
  const timer = setTimeout(run, delayMs);
  timer.unref();
  return () => clearTimeout(timer);
};

export class DenialLogLimiter {
  private windowStart = Number.NEGATIVE_INFINITY;
  private readonly perKey = new Map<string, number>();
  private readonly perCause = new Map<string, number>();
  private dropped = new Map<string, number>();
  private readonly maxKeys: number;
  /** Cancels the timer that writes this window's summary; set while one is pending. */
  private cancelFlush: (() => void) | undefined;

  constructor(
    private readonly limits: DenialLogLimits,
    private readonly now: () => number,
    /** Called once for a window that ended with records left out (at close, with the time it ran). */
    private readonly onWindowDropped: (dropped: DroppedSummary, windowMs: number) => void,
    private readonly schedule: Schedule = realTimer,
  ) {
    this.maxKeys = limits.maxKeys ?? 10_000;
  }

  /** Whether to write the record of a denial of this cause (e.g. "failed_auth:signature_invalid") from this IP. */
  admit(cause: string, ip: string | undefined): boolean {
    this.roll();
    const causeCount = this.perCause.get(cause) ?? 0;
    if (causeCount >= this.limits.perCause) return this.drop(cause);
    const key = `${cause}\u0000${ip ?? ''}`;
    const keyCount = this.perKey.get(key);
    if (keyCount === undefined) {
      // A window with more distinct clients than this is a flood: each new one is still
      // bounded by perCause, without a table entry.
      if (this.perKey.size < this.maxKeys) this.perKey.set(key, 1);
    } else if (keyCount >= this.limits.perClient) {
      return this.drop(cause);
    } else {
      this.perKey.set(key, keyCount + 1);
    }
    this.perCause.set(cause, causeCount + 1);
    return true;
  }

  /** Stops the timer and writes what the running window left out so far (shutdown). */
  close(): void {
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    const dropped = this.dropped;
    this.dropped = new Map();
    if (dropped.size > 0) this.onWindowDropped(dropped, Math.max(0, this.now() - this.windowStart));
  }

  private drop(cause: string): false {
    this.dropped.set(cause, (this.dropped.get(cause) ?? 0) + 1);
    this.scheduleFlush();
    return false;
  }

  private scheduleFlush(): void {
    if (this.cancelFlush) return;
    // At least 1 ms: a timer that fires a little early must not spin.
    const delay = Math.max(1, this.windowStart + this.limits.windowMs - this.now());
    this.cancelFlush = this.schedule(() => {
      this.cancelFlush = undefined;
      this.roll();
      // Early, or the next denial rolled already and the new window has drops of its own.
      if (this.dropped.size > 0) this.scheduleFlush();
    }, delay);
  }

  private roll(): void {
    const now = this.now();
    if (now - this.windowStart < this.limits.windowMs) return;
    const dropped = this.dropped;
    this.windowStart = now;
    this.perKey.clear();
    this.perCause.clear();
    this.dropped = new Map();
    if (dropped.size > 0) this.onWindowDropped(dropped, this.limits.windowMs);
  }
}
