import { describe, expect, it } from 'vitest';
import { StreamTable } from './stream-table';

describe('StreamTable', () => {
  it('finds, replaces and deletes streams by id', () => {
    const table = new StreamTable<string>();
    table.set(1, 'a');
    table.set(3, 'b');
    table.set(1, 'a2');
    expect(table.size).toBe(2);
    expect(table.get(1)).toBe('a2');
    expect(table.get(3)).toBe('b');
    expect(table.get(5)).toBeUndefined();
    expect(table.delete(1)).toBe(true);
    expect(table.delete(1)).toBe(false);
    expect(table.get(1)).toBeUndefined();
    expect(table.get(3)).toBe('b');
    expect(table.size).toBe(1);
  });

  it('keeps every entry reachable when deletions shift colliding entries back', () => {
    // In a 16-slot table 31 and 63 have home slot 15 and 1, 33, 65, 97 home slot 0: one probe
    // run from slot 15 that wraps around to slot 4.
    const table = new StreamTable<number>();
    for (const id of [31, 63, 1, 33, 65, 97]) table.set(id, id);
    for (const id of [31, 1, 65]) table.delete(id);
    for (const id of [63, 33, 97]) expect(table.get(id)).toBe(id);
    for (const id of [31, 1, 65]) expect(table.get(id)).toBeUndefined();
    expect(table.snapshot().sort((a, b) => a - b)).toEqual([33, 63, 97]);
  });

  it('grows past its initial capacity and keeps every stream', () => {
    const table = new StreamTable<number>();
    for (let id = 1; id < 2_000; id += 2) table.set(id, id * 10);
    expect(table.size).toBe(1_000);
    for (let id = 1; id < 2_000; id += 2) expect(table.get(id)).toBe(id * 10);
  });

  it('lets a caller delete while walking a snapshot', () => {
    const table = new StreamTable<number>();
    for (let id = 1; id < 40; id += 2) table.set(id, id);
    for (const id of table.snapshot()) table.delete(id);
    expect(table.size).toBe(0);
    expect(table.snapshot()).toEqual([]);
  });

  it('agrees with a Map over 200,000 random operations (ids as a connection opens them)', () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const table = new StreamTable<number>();
    const model = new Map<number, number>();
    let nextId = 1;
    for (let step = 0; step < 200_000; step++) {
      const r = random();
      if (r < 0.45 && model.size < 300) {
        // New streams mostly, now and then an id far ahead (the peer may skip ids).
        nextId += random() < 0.05 ? 2 * Math.floor(random() * 5_000) + 2 : 2;
        table.set(nextId, step);
        model.set(nextId, step);
      } else if (r < 0.9 && model.size > 0) {
        // Close an open stream: usually an old one, sometimes the newest.
        const ids = [...model.keys()];
        const id = ids[random() < 0.7 ? 0 : Math.floor(random() * ids.length)] as number;
        expect(table.delete(id)).toBe(true);
        model.delete(id);
      } else {
        const probe = 2 * Math.floor(random() * (nextId / 2 + 10)) + 1;
        expect(table.get(probe)).toBe(model.get(probe));
      }
      expect(table.size).toBe(model.size);
    }
    for (const [id, value] of model) expect(table.get(id)).toBe(value);
    expect(table.snapshot().sort((a, b) => a - b)).toEqual([...model.values()].sort((a, b) => a - b));
  });
});
