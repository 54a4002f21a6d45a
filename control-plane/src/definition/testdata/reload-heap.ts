// Run by module-loader.test.ts as `node --expose-gc --import tsx reload-heap.ts <dir> <edits>`:
// the way the control plane runs (tsx's loader, not vitest's), it loads an edited module
// <edits> times and prints how much this process's heap grew, as JSON.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { getHeapStatistics } from 'node:v8';
import { loadModuleDefault } from '../module-loader';

const [dir = '.', editsText = '12'] = process.argv.slice(2);
const edits = Number(editsText);
const literalBytes = 2 * 1024 * 1024;
const path = join(dir, 'edited.gateway.ts');
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

// An ES module (as in an ESM package such as this repository's), whose source holds 2 MiB of
// text unique to its version: a cached module keeps its source.
await writeFile(join(dir, 'package.json'), '{ "type": "module" }\n');

async function load(version: number): Promise<void> {
  const text = `${version}:`.padEnd(literalBytes, 'x');
  await writeFile(
    path,
    `export const text: string = ${JSON.stringify(text)};\nexport default { version: ${version} };\n`,
  );
  const value = (await loadModuleDefault(path)) as { version?: number };
  if (value.version !== version) throw new Error(`version ${version}: got ${JSON.stringify(value)}`);
}

function usedHeap(): number {
  gc?.();
  gc?.();
  return getHeapStatistics().used_heap_size;
}

for (let version = 0; version < 3; version += 1) await load(version); // warm-up: loaders, JIT
const before = usedHeap();
for (let version = 3; version < 3 + edits; version += 1) await load(version);
process.stdout.write(`${JSON.stringify({ edits, literalBytes, grownBytes: usedHeap() - before })}\n`);
