import type { Clock } from './types';

/** What the cache remembers of one key: refused until `until` (local ms), for at least `addend` hits. */
interface Entry {
  readonly until: number;
  /** A request asking for fewer hits may fit where this one did not (not for blocks: 1). */
  readonly addend: number;
  /** The rule's definition (keys.ts ruleDefinition) a block was earned under; unset: any. */
  readonly definition: string | undefined;
}

/**
 * The replica's memory of refusals that cannot change before a known time: keys over their
 * limit (until their window frees enough room) and active blocks (until they end), its own
 * and those other replicas announce (limiter/block-feed.ts). A hit on it is answered without
 * Redis, and without waiting when Redis is down.
 *
 * Callers key over-limit entries by the rule's counter key, which names the limit's
 * definition (algorithm, window, limit), so a changed limit never reads an entry kept under
 * the old one; blocks by the rule's block key (the Redis key layout's), with the rule's
 * definition beside it: a block is answered from here only for the definition it was earned
 * under (Redis itself keeps a block across a change of the limit, and says so when asked).
 *
 * Bounded: at most `maxEntries`; a new entry past that drops the soonest-expiring one (it
 * would have gone first anyway; a min-heap finds it), counted by `evictions`. Expired
 * entries also go as they are read.
 */
export class LocalCache {
  private readonly entries = new Map<string, Entry>();
  /** Min-heap by `until`; a node whose entry was replaced or removed is skipped (and compacted). */
  private heap: Array<{ until: number; key: string }> = [];
  private readonly clock: Clock;
  /** Live entries dropped to make room (not expired ones). */
  evictions = 0;

  constructor(private readonly opts: { maxEntries: number; clock?: Clock; onEvict?: () => void }) {
    if (!Number.isInteger(opts.maxEntries) || opts.maxEntries < 0)
      throw new Error(`maxEntries must be a non-negative integer, got ${opts.maxEntries}`);
    this.clock = opts.clock ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Active blocks known (block keys are those that end in a block entry: no addend, a definition). */
  get blocks(): number {
    let count = 0;
    const now = this.clock();
    for (const entry of this.entries.values()) if (entry.definition !== undefined && entry.until > now) count++;
    return count;
  }

  /**
   * Remembers that `key` refuses requests of at least `addend` hits for `ms` from now; a
   * block with the rule `definition` it was earned under.
   */
  remember(key: string, ms: number, addend = 1, definition?: string): void {
    if (this.opts.maxEntries === 0 || !(ms > 0)) return;
    const until = this.clock() + ms;
    const known = this.entries.get(key);
    // Keep the longer of two refusals, and the smaller addend (it refuses more requests).
    if (known && known.definition === definition && known.until >= until && known.addend <= addend) return;
    const keepKnown = known && known.definition === definition && known.until >= until;
    this.entries.delete(key);
    if (this.entries.size >= this.opts.maxEntries) this.evict();
    const entry: Entry = keepKnown
      ? { until: known.until, addend: Math.min(known.addend, addend), definition }
      : { until, addend, definition };
    this.entries.set(key, entry);
    this.push(entry.until, key);
  }

  /**
   * Milliseconds left of a refusal of `key` for a request of `addend` hits under the rule
   * `definition`; 0 when none is known.
   */
  refusedFor(key: string, addend = 1, definition?: string): number {
    const entry = this.entries.get(key);
    if (!entry) return 0;
    const left = entry.until - this.clock();
    if (left <= 0) {
      this.entries.delete(key);
      return 0;
    }
    if (entry.definition !== undefined && definition !== undefined && entry.definition !== definition) return 0;
    return addend >= entry.addend ? left : 0;
  }

  clear(): void {
    this.entries.clear();
    this.heap = [];
  }

  private push(until: number, key: string) {
    const heap = this.heap;
    // Replaced entries leave their old nodes behind: rebuild once they outnumber the live ones.
    if (heap.length > 2 * this.entries.size + 64) this.compact();
    heap.push({ until, key });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as { until: number }).until <= until) break;
      [heap[i], heap[parent]] = [
        heap[parent] as { until: number; key: string },
        heap[i] as { until: number; key: string },
      ];
      i = parent;
    }
  }

  private pop(): { until: number; key: string } | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined) return undefined;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let least = i;
        if (l < heap.length && (heap[l] as { until: number }).until < (heap[least] as { until: number }).until)
          least = l;
        if (r < heap.length && (heap[r] as { until: number }).until < (heap[least] as { until: number }).until)
          least = r;
        if (least === i) break;
        [heap[i], heap[least]] = [
          heap[least] as { until: number; key: string },
          heap[i] as { until: number; key: string },
        ];
        i = least;
      }
    }
    return top;
  }

  private compact() {
    const live = [...this.entries].map(([key, entry]) => ({ until: entry.until, key }));
    live.sort((a, b) => a.until - b.until);
    this.heap = live; // sorted ascending is a valid min-heap
  }

  /** Drops the soonest-expiring entry (an expired one when there is one: it goes uncounted). */
  private evict() {
    const now = this.clock();
    for (let node = this.pop(); node; node = this.pop()) {
      const entry = this.entries.get(node.key);
      if (!entry || entry.until !== node.until) continue; // stale node
      this.entries.delete(node.key);
      if (entry.until > now) {
        this.evictions++;
        this.opts.onEvict?.();
      }
      return;
    }
  }
}
