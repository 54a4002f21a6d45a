/**
 * Lets at most `burst` log records per key through in each interval and counts the
 * rest, so an attack or an outage costs a few lines per interval rather than one per
 * request, and the next record says how many were dropped.
 */
export class LogThrottle {
  private readonly windows = new Map<string, { start: number; used: number; suppressed: number }>();

  constructor(private readonly opts: { burst: number; intervalMs: number; clock?: () => number; maxKeys?: number }) {}

  /** undefined = drop this record; otherwise log it, mentioning `suppressed` earlier drops. */
  take(key: string): { suppressed: number } | undefined {
    const now = (this.opts.clock ?? Date.now)();
    let window = this.windows.get(key);
    if (!window || now - window.start >= this.opts.intervalMs) {
      // Keys are rule ids and fixed event names; the cap only guards against surprises.
      if (!window && this.windows.size >= (this.opts.maxKeys ?? 1000)) this.windows.clear();
      window = { start: now, used: 0, suppressed: window?.suppressed ?? 0 };
      this.windows.set(key, window);
    }
    if (window.used >= this.opts.burst) {
      window.suppressed++;
      return undefined;
    }
    window.used++;
    const suppressed = window.suppressed;
    window.suppressed = 0;
    return { suppressed };
  }
}
