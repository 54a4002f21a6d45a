import { resolve } from 'node:path';
import { compileDefinition } from '@sekisho/control-plane/definition/load';
import { describe, expect, it } from 'vitest';
import { largeDefinition } from './large-definition';

const baseDir = resolve(import.meta.dirname, '../../control-plane/examples');

describe('largeDefinition (bench:xds input)', () => {
  it('compiles at any size: no route shadows another, every service is used', () => {
    for (const routes of [1, 10, 250]) {
      const result = compileDefinition(largeDefinition(routes, 20), { baseDir });
      if (!result.ok) throw new Error(JSON.stringify(result.errors.slice(0, 5)));
      expect(result.ir.routes).toHaveLength(routes);
    }
    const result = compileDefinition(largeDefinition(250, 20), { baseDir });
    if (!result.ok) throw new Error('invalid');
    const targets = new Set(
      result.ir.routes.flatMap((r) => (r.action.kind === 'forward' ? r.action.clusters.map((c) => c.name) : [])),
    );
    expect(targets.size).toBe(20);
  });
});
