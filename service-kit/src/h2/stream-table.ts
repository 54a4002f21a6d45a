// The open streams of one connection by id, without a Map.
//
// A Map that gains and loses an entry per request rebuilds its backing table every few
// requests, and V8 keeps a link from each obsolete table to its successor (for iterators).
// Once an obsolete table is in the old generation, every young-generation collection treats
// it as live until the next full collection, so the streams it still lists, and everything
// their calls reference, are copied and then promoted: the request garbage of a busy
// connection filled the old generation in ~3 s and each full collection paused the loop for
// 10–30 ms (bench/README.md, "The GC pauses behind the tail"). This table is two
// flat arrays whose slots are cleared on delete, so nothing outlives its stream.
//
// Open addressing with linear probing. Client stream ids are odd and increasing, so
// `(id >>> 1) & mask` spreads consecutive streams over consecutive slots.

export class StreamTable<T> {
  private ids: Int32Array;
  private values: Array<T | undefined>;
  private mask: number;
  size = 0;

  constructor(initialCapacity = 16) {
    let capacity = 16;
    while (capacity < initialCapacity) capacity *= 2;
    this.ids = new Int32Array(capacity);
    this.values = new Array<T | undefined>(capacity).fill(undefined);
    this.mask = capacity - 1;
  }

  get(id: number): T | undefined {
    const { ids, mask } = this;
    for (let i = (id >>> 1) & mask; ; i = (i + 1) & mask) {
      const at = ids[i] as number;
      if (at === id) return this.values[i];
      if (at === 0) return undefined;
    }
  }

  /** Adds or replaces the value for `id` (a stream id: 1 to 2^31-1). */
  set(id: number, value: T): void {
    if ((this.size + 1) * 2 > this.ids.length) this.grow();
    const { ids, mask } = this;
    for (let i = (id >>> 1) & mask; ; i = (i + 1) & mask) {
      const at = ids[i] as number;
      if (at === id) {
        this.values[i] = value;
        return;
      }
      if (at === 0) {
        ids[i] = id;
        this.values[i] = value;
        this.size++;
        return;
      }
    }
  }

  delete(id: number): boolean {
    const { ids, values, mask } = this;
    let i = (id >>> 1) & mask;
    for (; ; i = (i + 1) & mask) {
      const at = ids[i] as number;
      if (at === 0) return false;
      if (at === id) break;
    }
    // Backward-shift deletion: move later entries of the probe run into the gap, so lookups
    // never need tombstones and the table never has to be rebuilt.
    let gap = i;
    for (let j = (gap + 1) & mask; ; j = (j + 1) & mask) {
      const at = ids[j] as number;
      if (at === 0) break;
      const home = (at >>> 1) & mask;
      // The entry at j may fill the gap only if its home slot is not in (gap, j] (cyclically).
      const movable = gap <= j ? home <= gap || home > j : home <= gap && home > j;
      if (movable) {
        ids[gap] = at;
        values[gap] = values[j];
        gap = j;
      }
    }
    ids[gap] = 0;
    values[gap] = undefined;
    this.size--;
    return true;
  }

  /** The values now, as an array: callers may delete while they walk it. */
  snapshot(): T[] {
    const out: T[] = [];
    const { ids, values } = this;
    for (let i = 0; i < ids.length; i++) if (ids[i] !== 0) out.push(values[i] as T);
    return out;
  }

  private grow() {
    const oldIds = this.ids;
    const oldValues = this.values;
    const capacity = oldIds.length * 2;
    this.ids = new Int32Array(capacity);
    this.values = new Array<T | undefined>(capacity).fill(undefined);
    this.mask = capacity - 1;
    this.size = 0;
    for (let i = 0; i < oldIds.length; i++) {
      const id = oldIds[i] as number;
      if (id !== 0) this.set(id, oldValues[i] as T);
    }
  }
}
