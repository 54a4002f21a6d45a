import { describe, expect, it } from 'vitest';
import { covers, type ParsedMatch, ShadowIndex } from './match';

/** The definition of "shadowed by": the first earlier route that covers it, comparing every pair. */
function firstCoveringPairwise(earlier: readonly ParsedMatch[], later: ParsedMatch): number {
  return earlier.findIndex((match) => covers(match, later));
}

/** A deterministic mix of every path kind, methods and conditions over a few shared paths. */
function matches(count: number): ParsedMatch[] {
  let seed = 7;
  const next = (n: number) => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
    return (seed >>> 16) % n; // the high bits: the low bits of this generator repeat quickly
  };
  const paths = ['/', '/a', '/a/', '/a/b', '/a/b/c', '/ab', '/b', '/b/{id}', '/a/{x}/c'];
  const kinds = ['exact', 'prefix', 'template', 'regex'] as const;
  const methodSets = [[], ['GET'], ['POST'], ['GET', 'POST']];
  const conditions = [[], [{ name: 'x-a', kind: 'exact', value: '1', invert: false }]] as const;
  return Array.from({ length: count }, () => {
    const kind = kinds[next(kinds.length)] ?? 'exact';
    const value = paths[next(paths.length)] ?? '/';
    return {
      methods: [...(methodSets[next(methodSets.length)] ?? [])],
      path: { kind, value: kind === 'template' && !value.includes('{') ? `${value}/{v}` : value },
      headers: [...(conditions[next(conditions.length)] ?? [])],
      query: [...(conditions[next(conditions.length)] ?? [])],
    };
  });
}

describe('ShadowIndex', () => {
  it('finds the same first covering route as comparing every earlier route', () => {
    const all = matches(600);
    const index = new ShadowIndex();
    const found: number[] = [];
    const expected: number[] = [];
    all.forEach((match, i) => {
      found.push(index.firstCovering(match));
      expected.push(firstCoveringPairwise(all.slice(0, i), match));
      index.add(i, match);
    });
    expect(found).toEqual(expected);
    // The table really exercises shadowing, by each kind of earlier path.
    const shadowed = expected.filter((first) => first !== -1);
    expect(shadowed.length).toBeGreaterThan(100);
    const coveringKinds = new Set(shadowed.map((first) => all[first]?.path.kind));
    expect([...coveringKinds].sort()).toEqual(['exact', 'prefix', 'regex', 'template']);
  });

  it('answers -1 for the first route and for a path nothing earlier reaches', () => {
    const index = new ShadowIndex();
    const exact = (value: string): ParsedMatch => ({
      methods: [],
      path: { kind: 'exact', value },
      headers: [],
      query: [],
    });
    expect(index.firstCovering(exact('/a'))).toBe(-1);
    index.add(0, { ...exact('/a/'), path: { kind: 'prefix', value: '/a/' } });
    expect(index.firstCovering(exact('/a'))).toBe(-1);
    expect(index.firstCovering(exact('/a/b'))).toBe(0);
  });
});
