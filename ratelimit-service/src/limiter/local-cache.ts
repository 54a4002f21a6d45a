import type { Clock } from './types';

/** What the cache remembers of one key: refused until `until` (local ms), for at least `addend` hits. */
interface Entry {
  readonly until: number;
  /** A request asking for fewer hits may fit where this one did not (not for blocks: 1). */
  readonly addend: number;
}

/**
 * The replica's memory of refusals that cannot change before a known time: keys over their
 * limit (until their window frees enough room) and active blocks (until they end). A hit on
 * it is answered without Redis, and without waiting when Redis is down.
 *
 * Callers key over-limit entries by the rule's counter key, which names the limit's
 * definition (algorithm, window, limit), so a changed limit never reads an entry kept under
 * the old one; blocks by the rule's block key, which names the rule only, as Redis does (a
 * block already earned outlives a change of the limit).
 *
 * Bounded: at most `maxEntries`; a new entry past that sweeps some expired ones, and failing
 * that drops the oldest inserted (Map order). Expired entries also go as they are read.
 */
export class LocalCache {
  private readonly entries = new Map<string, Entry>();
  private readonly clock: Clock;

  constructor(private readonly opts: { maxEntries: number; clock?: Clock }) {
    if (!Number.isInteger(opts.maxEntries) || opts.maxEntries < 0)
      throw new Error(`maxEntries must be a non-negative integer, got ${opts.maxEntries}`);
    this.clock = opts.clock ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Remembers that `key` refuses requests of at least `addend` hits for `ms` from now. */
  remember(key: string, ms: number, addend = 1): void {
    if (this.opts.maxEntries === 0 || !(ms > 0)) return;
    const until = this.clock() + ms;
    const known = this.entries.get(key);
    // Keep the longer of two refusals, and the smaller addend (it refuses more requests).
    if (known && known.until >= until && known.addend <= addend) return;
    this.entries.delete(key);
    if (this.entries.size >= this.opts.maxEntries) this.evict();
    this.entries.set(key, { until, addend: known && known.until >= until ? Math.min(known.addend, addend) : addend });
  }

  /** Milliseconds left of a refusal of `key` for a request of `addend` hits; 0 when none is known. */
  refusedFor(key: string, addend = 1): number {
    const entry = this.entries.get(key);
    if (!entry) return 0;
    const left = entry.until - this.clock();
    if (left <= 0) {
      this.entries.delete(key);
      return 0;
    }
    return addend >= entry.addend ? left : 0;
  }

  clear(): void {
    this.entries.clear();
  }

  private evict() {
    const now = this.clock();
    // Expired entries first (a bounded sweep), then the oldest inserted.
    let scanned = 0;
    for (const [key, entry] of this.entries) {
      if (entry.until <= now) this.entries.delete(key);
      if (++scanned >= 64) break;
    }
    if (this.entries.size >= this.opts.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
  }
}
