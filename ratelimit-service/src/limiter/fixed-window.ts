import { blockKey, counterKey } from './keys';
import type { Clock, CounterStore, LimitCheck, LimitDecision, Limiter } from './types';

/**
 * Fixed windows aligned to the epoch (a 60 s window starts at every whole minute),
 * as envoyproxy/ratelimit counts. The window start is part of the counter key, so a
 * new window is a new key and old ones simply expire.
 */
export class FixedWindowLimiter implements Limiter {
  constructor(
    private readonly opts: {
      store: CounterStore;
      clock: Clock;
      hashValues: (values: readonly string[]) => string;
    },
  ) {}

  async hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    if (checks.length === 0) return [];
    // Envoy sends 0 when the field is unset, which means 1.
    const addend = hitsAddend > 0 ? hitsAddend : 1;
    const nowSeconds = this.opts.clock() / 1000;
    const windows = checks.map(({ rule, values }) => {
      const hash = this.opts.hashValues(values);
      const start = Math.floor(nowSeconds / rule.windowSeconds) * rule.windowSeconds;
      return {
        request: {
          counterKey: counterKey(rule.id, hash, start),
          blockKey: blockKey(rule.id, hash),
          limit: rule.requestsPerWindow,
          windowSeconds: rule.windowSeconds,
          blockSeconds: rule.blockSeconds,
        },
        // Whole seconds, at least 1: what Retry-After and RateLimit-Reset can say.
        resetSeconds: Math.max(1, Math.ceil(start + rule.windowSeconds - nowSeconds)),
      };
    });

    const results = await this.opts.store.increment(
      windows.map((w) => w.request),
      addend,
    );
    if (results.length !== checks.length) {
      throw new Error(`counter store answered ${results.length} results for ${checks.length} counters`);
    }

    return checks.map(({ rule }, i): LimitDecision => {
      const result = results[i] as (typeof results)[number];
      const windowReset = (windows[i] as (typeof windows)[number]).resetSeconds;
      if (result.blocked) {
        return {
          rule,
          overLimit: true,
          blocked: true,
          remaining: 0,
          resetSeconds: Math.max(1, result.blockTtlSeconds),
        };
      }
      const overLimit = result.count > rule.requestsPerWindow;
      return {
        rule,
        overLimit,
        blocked: false,
        remaining: Math.max(0, rule.requestsPerWindow - result.count),
        // The excess that starts a block is refused for the block's length, not the window's.
        resetSeconds: result.blockTtlSeconds > 0 ? Math.max(windowReset, result.blockTtlSeconds) : windowReset,
      };
    });
  }
}
