import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import {
  assertBuilt,
  type BuiltService,
  bundleEntry,
  productionNodeEnv,
  productionNodeFlags,
  serviceEntries,
} from '@sekisho/devstack/build';
import { repoRoot } from '@sekisho/devstack/paths';
import { type ManagedProcess, spawnProcess } from '@sekisho/devstack/processes';
import { type LoadOptions, type LoadResult, runH2load } from './h2load';

// What the three benchmarks share: the core split, run lengths, pinned processes, RSS
// sampling, and the results file in DESIGN.md's shape with a printed table.

/** The server under test gets core 0; h2load (and Redis, which both sides share) core 1. */
export const cores = { server: '0', loadGenerator: '1', redis: '1' } as const;

export interface RunSettings {
  quick: boolean;
  /**
   * How the Node servers run: `dist` (default) is what production runs, the bundles
   * `npm run build` writes, by plain node; `--tsx` runs the sources under tsx to compare.
   */
  runtime: Runtime;
  /** --cpu-prof: every Node server under test writes a V8 CPU profile to bench/results/profiles/. */
  cpuProfile: boolean;
  durationS: number;
  warmupS: number;
  concurrencies: number[];
  /** bench:gateway: extra rounds of the saturation runs, the cases alternating (its median is read). */
  saturationRounds: number;
}

export function runSettings(argv: string[] = process.argv.slice(2)): RunSettings {
  const unknown = argv.filter((a) => a !== '--quick' && a !== '--cpu-prof' && a !== '--tsx');
  if (unknown.length > 0) {
    throw new Error(`unknown argument(s): ${unknown.join(' ')} (accepted: --quick, --cpu-prof, --tsx)`);
  }
  const quick = argv.includes('--quick');
  const cpuProfile = argv.includes('--cpu-prof');
  runtime = argv.includes('--tsx') ? 'tsx' : 'dist';
  return quick
    ? { quick, cpuProfile, runtime, durationS: 1, warmupS: 0.5, concurrencies: [1, 16, 64], saturationRounds: 1 }
    : { quick, cpuProfile, runtime, durationS: 3, warmupS: 1, concurrencies: [1, 16, 64], saturationRounds: 3 };
}

export function assertTwoCores(): void {
  if (cpus().length < 2) {
    throw new Error(
      `the benchmarks pin the server and the load generator to different cores; this machine has ${cpus().length}`,
    );
  }
}

/**
 * Where a server of two workers (SEKISHO_WORKERS=2) runs: cores 0 and 1, and h2load on a core
 * of its own when the machine has a third; on a 2-core machine h2load (and Redis) share the
 * server's two cores, which `note` says and every row's cores columns repeat.
 */
export function twoWorkerPlacement(): { serverCores: string; loadGeneratorCores: string; note: string } {
  if (cpus().length >= 3) {
    return { serverCores: '0,1', loadGeneratorCores: '2', note: 'server on cores 0,1; h2load on core 2' };
  }
  return {
    serverCores: '0,1',
    loadGeneratorCores: '0,1',
    note: `this machine has ${cpus().length} cores: the two workers run on cores 0,1 and h2load (and Redis) share them, so throughput is a lower bound; calls_per_busy_core_s counts the server's own CPU time`,
  };
}

/** A child process confined to `core` with taskset (exec'd, so the pid is the program's own). */
export function spawnPinned(name: string, core: string, command: string, args: string[], env?: NodeJS.ProcessEnv) {
  return spawnProcess({ name, command: 'taskset', args: ['-c', core, command, ...args], env, cwd: repoRoot });
}

export const profilesDir = join(repoRoot, 'bench', 'results', 'profiles');

export type Runtime = 'dist' | 'tsx';
let runtime: Runtime = 'dist';

/** What the results file says about how the Node servers ran. */
export function runtimeNote(): string {
  return runtime === 'dist'
    ? 'node dist/<service>/main.js (the esbuild bundles `npm run build` writes, as production runs them)'
    : 'node --import tsx <service>/src/main.ts (--tsx: the sources, for comparison)';
}

const bundled = new Map<string, Promise<string>>();

/**
 * The file node runs for a TypeScript entry of this repository: a service's bundle from
 * dist/ (built by the benchmark's pre-step, `npm run build`), or for the benchmark's own
 * servers (the no-ops) a bundle made here the same way; under `--tsx`, the source itself.
 */
export async function nodeEntry(
  entry: string,
  mode: Runtime = runtime,
  nodeFlags?: readonly string[],
): Promise<{ args: string[]; env?: Readonly<Record<string, string>> }> {
  if (mode === 'tsx') return { args: [...(nodeFlags ?? []), '--import', 'tsx', join(repoRoot, entry)] };
  const service = (Object.keys(serviceEntries) as BuiltService[]).find((s) => serviceEntries[s] === entry);
  // As production runs it, its V8 flags and environment included unless the caller names its
  // own flags (then it sets whatever environment it compares, as bench:memory does).
  if (service) {
    return nodeFlags
      ? { args: [...nodeFlags, assertBuilt(service)] }
      : { args: [...productionNodeFlags, assertBuilt(service)], env: productionNodeEnv };
  }
  let file = bundled.get(entry);
  if (!file) {
    const out = join(repoRoot, '.cache', 'bench', 'dist', `${entry.replace(/[/.]/g, '_')}.mjs`);
    file = bundleEntry(entry, out).then(() => out);
    bundled.set(entry, file);
  }
  return { args: [...(nodeFlags ?? []), await file] };
}

/**
 * A TypeScript entry of this repository as the run's runtime runs it (see nodeEntry); with
 * `cpuProfile`, V8 writes its CPU profile (the whole life of the process) when it exits.
 * `nodeFlags` (V8 heap flags) replace the production flags and environment a service runs with
 * (devstack's productionNodeFlags and productionNodeEnv); undefined keeps them.
 */
export async function spawnNodePinned(
  name: string,
  core: string,
  entry: string,
  args: string[],
  env?: NodeJS.ProcessEnv,
  cpuProfile = false,
  nodeFlags?: readonly string[],
  mode: Runtime = runtime,
) {
  const profile = cpuProfile
    ? ['--cpu-prof', `--cpu-prof-dir=${profilesDir}`, `--cpu-prof-name=${name}.${Date.now()}.cpuprofile`]
    : [];
  const target = await nodeEntry(entry, mode, nodeFlags);
  // The caller's variables win over production's, as a k8s env entry wins over the image's ENV.
  const withProduction = target.env ? { ...target.env, ...(env ?? process.env) } : env;
  return spawnPinned(name, core, process.execPath, [...profile, ...target.args, ...args], withProduction);
}

const idleRss = new Map<number, number>();

/** Records a server's RSS once it is ready and before any load: what rows report as idle. */
export function recordIdleRss(pid: number): number {
  const rss = rssMb(pid);
  idleRss.set(pid, rss);
  return rss;
}

/** Resident set size in MB from /proc/<pid>/status, summed over its child processes (SEKISHO_WORKERS). */
export function rssMb(pid: number): number {
  let kb = 0;
  for (const p of processTree(pid)) {
    const status = readOrUndefined(`/proc/${p}/status`);
    if (status === undefined) continue;
    const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
    if (!match) throw new Error(`no VmRSS in /proc/${p}/status`);
    kb += Number(match[1]);
  }
  return Math.round((kb / 1024) * 10) / 10;
}

/** CPU seconds (user + system) the process and its children have used so far. */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    const stat = readOrUndefined(`/proc/${p}/stat`);
    if (stat === undefined) continue;
    // Fields after the parenthesised command: state is the 3rd field, utime the 14th, stime the 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

/** The pid and every descendant (a cluster primary's workers), from /proc's children lists. */
export function processTree(pid: number): number[] {
  const found = [pid];
  for (let i = 0; i < found.length; i++) {
    const p = found[i] as number;
    const children = readOrUndefined(`/proc/${p}/task/${p}/children`);
    for (const child of children?.trim().split(/\s+/) ?? []) if (child) found.push(Number(child));
  }
  return found;
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

export interface Row {
  case: string;
  concurrency: number;
  throughput_per_s: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  [field: string]: unknown;
}

export interface Absent {
  case: string;
  absent: true;
  reason: string;
}

/**
 * Runs h2load at each concurrency against one server process, sampling its RSS (idle before
 * the first load, the peak seen while loaded).
 */
export async function loadAtConcurrencies(
  caseName: string,
  server: Pick<ManagedProcess, 'pid'>,
  settings: RunSettings,
  load: Omit<LoadOptions, 'concurrency' | 'durationS' | 'warmupS' | 'cores'>,
  extra: (result: LoadResult) => Promise<Record<string, unknown>> | Record<string, unknown> = () => ({}),
  /** Where the server runs and where h2load may run, when not the usual cores (several workers). */
  placement: { serverCores?: string; loadGeneratorCores?: string } = {},
): Promise<Row[]> {
  const serverCores = placement.serverCores ?? cores.server;
  const loadGeneratorCores = placement.loadGeneratorCores ?? cores.loadGenerator;
  const rows: Row[] = [];
  const rssIdle = idleRss.get(server.pid) ?? rssMb(server.pid);
  for (const concurrency of settings.concurrencies) {
    let rssPeak = rssMb(server.pid);
    const sampler = setInterval(() => {
      rssPeak = Math.max(rssPeak, rssMb(server.pid));
    }, 200);
    let result: LoadResult;
    const cpuBefore = cpuSeconds(server.pid);
    const wallBefore = performance.now();
    try {
      result = await runH2load({
        ...load,
        concurrency,
        durationS: settings.durationS,
        warmupS: settings.warmupS,
        cores: loadGeneratorCores,
      });
    } finally {
      clearInterval(sampler);
    }
    // Cores the server kept busy over the level (warm-up included), and calls per busy core.
    const busyCores = (cpuSeconds(server.pid) - cpuBefore) / ((performance.now() - wallBefore) / 1000);
    const row: Row = {
      case: caseName,
      concurrency,
      ...result,
      rss_idle_mb: rssIdle,
      rss_load_mb: rssPeak,
      server_cores: serverCores,
      load_generator_cores: loadGeneratorCores,
      server_busy_cores: Math.round(busyCores * 100) / 100,
      calls_per_busy_core_s: busyCores > 0 ? Math.round(result.throughput_per_s / busyCores) : null,
      ...(await extra(result)),
    };
    rows.push(row);
    printRow(row);
  }
  return rows;
}

export function machine() {
  const list = cpus();
  return {
    node: process.version,
    cpu: `${list[0]?.model ?? 'unknown'} x ${list.length}`,
    timestamp: new Date().toISOString(),
  };
}

const columns = [
  'case',
  'concurrency',
  'throughput_per_s',
  'p50_ms',
  'p99_ms',
  'p999_ms',
  'max_ms',
  'rss_idle_mb',
  'rss_load_mb',
  'server_busy_cores',
  'calls_per_busy_core_s',
];

export function printHeader(): void {
  console.log(columns.map((c) => c.padStart(c === 'case' ? 24 : 12)).join(' '));
}

export function printRow(row: Row): void {
  console.log(
    columns
      .map((c) => {
        const v = row[c];
        // Several processes (the whole Sekisho stack): their sum.
        const shown =
          v !== null && typeof v === 'object'
            ? Math.round(Object.values(v as Record<string, number>).reduce((a, b) => a + b, 0) * 10) / 10
            : v;
        return (shown === undefined ? '-' : String(shown)).padStart(c === 'case' ? 24 : 12);
      })
      .join(' '),
  );
}

export async function writeResults(
  name: string,
  results: Array<Row | Absent>,
  notes: Record<string, unknown>,
): Promise<string> {
  const dir = join(repoRoot, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  const body = { name, ...machine(), cores: { ...cores }, notes, results };
  await writeFile(file, `${JSON.stringify(body, null, 2)}\n`);
  return file;
}
