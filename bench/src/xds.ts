// npm run bench:xds — what the control plane costs for large definitions:
// - compile time (validate + IR + translate, the path every reload takes) for 100 / 1,000 /
//   10,000 routes over 50 services, median of several runs, with each phase on its own, the
//   CPU time, the heap the compiled result keeps, and the bytes it serves;
// Convergence (a one-route change reaching 10 / 100 / 500 simulated proxies, state of the world
// and delta) is its own script, npm run bench:xds-convergence (bench/results/xds-convergence.json):
// it starts a control plane per case on its own core.
import { writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { compileDefinition } from '@sekisho/control-plane/definition/load';
import { gatewayDefinitionSchema } from '@sekisho/control-plane/definition/schema';
import { buildIR } from '@sekisho/control-plane/ir/build';
import { fileSystemSource } from '@sekisho/control-plane/ir/tls';
import { translate } from '@sekisho/control-plane/translate/index';
import { typeUrls } from '@sekisho/control-plane/xds/type-urls';
import { repoRoot } from '@sekisho/devstack/paths';
import { machine } from './common';
import { largeDefinition } from './large-definition';

const argv = process.argv.slice(2);
const unknown = argv.filter((a) => a !== '--quick');
if (unknown.length > 0) throw new Error(`unknown argument(s): ${unknown.join(' ')} (accepted: --quick)`);
const quick = argv.includes('--quick');

const services = 50;
const sizes = [100, 1_000, 10_000];
/** Measured runs per size (after two warm-up runs); the median is reported. */
const runsFor = (routes: number) => (quick ? 3 : routes >= 10_000 ? 7 : 11);
const targetMs = 1_000;
// The definition's HTTPS listener names the example's development certificate.
const baseDir = join(repoRoot, 'control-plane', 'examples');

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const value = sorted.length % 2 === 1 ? sorted[middle] : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
  return Math.round((value ?? Number.NaN) * 10) / 10;
}

/** The JS heap plus the memory of Buffers (packed resources live outside the heap). */
function usedHeapMb(): number {
  gc();
  gc();
  const { heapUsed, external } = process.memoryUsage();
  return (heapUsed + external) / 2 ** 20;
}

interface Timing {
  wallMs: number;
  cpuMs: number;
}

function timed(work: () => void): Timing {
  const cpu = process.cpuUsage();
  const start = performance.now();
  work();
  const wallMs = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { wallMs, cpuMs: (used.user + used.system) / 1000 };
}

function compileCase(routes: number) {
  const runs = runsFor(routes);
  const totals: Timing[] = [];
  const phases = { validate: [] as number[], ir: [] as number[], translate: [] as number[] };
  for (let run = -2; run < runs; run += 1) {
    // A fresh definition each run, built before the clock starts (as a loaded file would be).
    const definition = largeDefinition(routes, services);
    gc();
    const total = timed(() => {
      const result = compileDefinition(definition, { baseDir });
      if (!result.ok)
        throw new Error(`the benchmark definition is invalid: ${JSON.stringify(result.errors.slice(0, 3))}`);
    });
    // The same three steps compileDefinition takes, each timed on its own (a separate pass).
    const again = largeDefinition(routes, services);
    gc();
    let parsed: ReturnType<typeof gatewayDefinitionSchema.parse> | undefined;
    let built: ReturnType<typeof buildIR> | undefined;
    const validate = timed(() => {
      parsed = gatewayDefinitionSchema.parse(again);
    });
    const ir = timed(() => {
      built = buildIR(parsed as NonNullable<typeof parsed>, fileSystemSource(baseDir));
    });
    const translation = timed(() => {
      if (built?.ok) translate(built.ir);
    });
    if (run < 0) continue; // warm-up: JIT, module loading
    totals.push(total);
    phases.validate.push(validate.wallMs);
    phases.ir.push(ir.wallMs);
    phases.translate.push(translation.wallMs);
  }

  // What a compiled definition keeps while it is served, and what it serves.
  const definition = largeDefinition(routes, services);
  const before = usedHeapMb();
  const kept = compileDefinition(definition, { baseDir });
  const retainedMb = usedHeapMb() - before;
  if (!kept.ok) throw new Error('invalid');
  const bytesOf = (typeUrl: string) =>
    (kept.resources.get(typeUrl) ?? []).reduce((sum, r) => sum + r.resource.value.byteLength, 0);
  const allBytes = [...kept.resources.keys()].reduce((sum, typeUrl) => sum + bytesOf(typeUrl), 0);

  return {
    case: `compile ${routes.toLocaleString('en')} routes`,
    routes,
    services,
    runs,
    compile_ms: median(totals.map((t) => t.wallMs)),
    compile_min_ms: median([Math.min(...totals.map((t) => t.wallMs))]),
    compile_max_ms: median([Math.max(...totals.map((t) => t.wallMs))]),
    compile_cpu_ms: median(totals.map((t) => t.cpuMs)),
    validate_ms: median(phases.validate),
    ir_ms: median(phases.ir),
    translate_ms: median(phases.translate),
    heap_retained_mb: Math.round(retainedMb * 10) / 10,
    heap_and_buffers_mb: Math.round(usedHeapMb() * 10) / 10,
    resources_bytes: allBytes,
    route_config_bytes: bytesOf(typeUrls.route),
    route_configurations: kept.resources.get(typeUrls.route)?.length ?? 0,
  };
}

const loadBefore = loadavg();
const results: Array<Record<string, unknown>> = [];
console.log(
  ['case', 'median ms', 'cpu ms', 'validate', 'ir', 'translate', 'retained MB', 'bytes']
    .map((c) => c.padStart(14))
    .join(''),
);
for (const routes of sizes) {
  const row = compileCase(routes);
  results.push({ ...row });
  console.log(
    [
      row.case,
      row.compile_ms,
      row.compile_cpu_ms,
      row.validate_ms,
      row.ir_ms,
      row.translate_ms,
      row.heap_retained_mb,
      row.resources_bytes,
    ]
      .map((v) => String(v).padStart(14))
      .join(''),
  );
}
const largest = results.find((row) => row.routes === 10_000);
const notes = {
  quick,
  definition: `bench/src/large-definition.ts: ${services} services; routes mix methods, prefixes, templates with an owner check, rewrites, per-route limits and CORS; HTTP and HTTPS listeners`,
  measured:
    'compile_ms: compileDefinition() wall time (validate + IR + translate), median; phases timed in a separate pass',
  cpu_ms: 'process.cpuUsage over the compile: every thread, the garbage collector’s helpers included',
  heap: 'heap_retained_mb: JS heap + Buffers kept by one compiled result (definition, IR, resources), after GC; heap_and_buffers_mb: the whole process then',
  load_average_before: loadBefore.map((v) => Math.round(v * 100) / 100),
  load_average_after: loadavg().map((v) => Math.round(v * 100) / 100),
  comparison: {
    target: `10,000 routes compiled in <= ${targetMs} ms`,
    measured_ms: largest?.compile_ms,
    met: typeof largest?.compile_ms === 'number' && largest.compile_ms <= targetMs,
  },
};
const file = join(repoRoot, 'bench', 'results', 'xds.json');
await writeFile(file, `${JSON.stringify({ name: 'xds', ...machine(), notes, results }, null, 2)}\n`);
console.log(
  `\nload average before ${notes.load_average_before.join(' ')}, after ${notes.load_average_after.join(' ')}`,
);
console.log(`results: ${file}`);
