// Facts waiting for the next flush, summed per counter and subject, so a flush costs one
// Redis command per distinct subject rather than one per request. Bounded by distinct keys:
// past the bound a new subject's fact is dropped (and counted), a known one is still summed.
import type { Counter, Fact } from './facts';

export interface PendingCount {
  counter: Counter;
  subject: string;
  amount: number;
}

export class FactBuffer {
  private pending = new Map<string, PendingCount>();

  constructor(private readonly maxKeys: number) {}

  /** False when the fact was dropped because the buffer is full. */
  add(fact: Fact): boolean {
    const key = `${fact.counter}\u0000${fact.subject}`;
    const known = this.pending.get(key);
    if (known) {
      known.amount += fact.amount;
      return true;
    }
    if (this.pending.size >= this.maxKeys) return false;
    this.pending.set(key, { ...fact });
    return true;
  }

  get size(): number {
    return this.pending.size;
  }

  /** Everything pending, leaving the buffer empty. */
  take(): PendingCount[] {
    const taken = [...this.pending.values()];
    this.pending = new Map();
    return taken;
  }
}
