// The production build: each service bundled by esbuild into one ESM file under dist/,
// run by plain `node` (no TypeScript loader in the process). Measured against tsx and
// per-file transpiling in bench/README.md ("Compiled output"). Per-file output (tsc's emit)
// does not run under plain node: the sources import without extensions and the workspace
// packages export .ts files; a bundle resolves both at build time.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type BuildOptions, build } from 'esbuild';
import { repoRoot } from './paths';

/** The processes production runs, by the name dist/ gives them. */
export const serviceEntries = {
  'control-plane': 'control-plane/src/main.ts',
  'ext-authz': 'ext-authz/src/main.ts',
  'ratelimit-service': 'ratelimit-service/src/main.ts',
  injector: 'injector/src/main.ts',
  'threat-detector': 'threat-detector/src/main.ts',
} as const;
export type BuiltService = keyof typeof serviceEntries;

/**
 * The V8 flags production runs every service with (the Dockerfiles' ENTRYPOINT, devstack's dist
 * runtime, the benchmarks). A young generation of at most 2 MB per semi-space (V8's default grows
 * to 16 MB under load), and an old generation allowed to grow to twice what survived the last
 * full collection before the next one (V8's default lets it reach up to four times: the rate-limit
 * service's old generation filled to ~46 MB of mostly garbage between collections at 64 in
 * flight). Measured side by side in bench/README.md ("Memory: what the idle services hold and the
 * flags"): the rate-limit service under load ~104 MB instead of ~135 MB, for 9-15 % more CPU per
 * call (the more frequent full collections); ext-authz no slower. Not --max-old-space-size: the
 * caps tried (64 to 384 MB) cost the rate-limit service or ext-authz 15-60 % of their throughput.
 */
export const productionNodeFlags: readonly string[] = ['--max-semi-space-size=2', '--heap-growing-percent=100'];

/**
 * The environment production sets for every service's node (the Dockerfiles' ENV, devstack's
 * dist runtime, the benchmarks): glibc's malloc limited to 2 arenas. Each thread that mallocs
 * (V8's GC helpers, libuv's pool) otherwise gets an arena of its own whose freed pages stay
 * resident; measured in bench/README.md ("Memory: what the idle services hold"): 2-3 MB less
 * idle, up to ~10 MB less under load, throughput unchanged.
 */
export const productionNodeEnv: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

export const distDir: string = join(repoRoot, 'dist');

/** dist/<service>/main.js: what `node` runs in production. */
export function distEntry(service: BuiltService, dir = distDir): string {
  return join(dir, service, 'main.js');
}

export interface BuildResult {
  outDir: string;
  files: { service: BuiltService; path: string; bytes: number }[];
  ms: number;
}

/**
 * Bundles every service into `outDir` (dist/ by default). Third-party packages are bundled
 * too, except tsx: the compiled control plane loads it only to import a TypeScript gateway
 * definition (a .yaml one needs nothing), see control-plane/src/definition/load.ts.
 */
export async function buildServices(outDir = distDir): Promise<BuildResult> {
  const t0 = performance.now();
  await build({
    ...bundleOptions,
    entryPoints: Object.entries(serviceEntries).map(([service, entry]) => ({ in: entry, out: `${service}/main` })),
    outdir: outDir,
  });
  const files = (Object.keys(serviceEntries) as BuiltService[]).map((service) => {
    const path = distEntry(service, outDir);
    assertAscii(path);
    return { service, path, bytes: statSync(path).size };
  });
  return { outDir, files, ms: Math.round(performance.now() - t0) };
}

/** The reason for charset 'ascii' and linked legal comments above, kept true. */
function assertAscii(path: string): void {
  const text = readFileSync(path);
  const at = text.findIndex((byte) => byte > 0x7f);
  if (at >= 0) {
    const around = text.subarray(Math.max(0, at - 60), at + 20).toString('utf8');
    throw new Error(`${path}: a non-ASCII byte at ${at} (near "${around}") would double the source's memory`);
  }
}

/** One more entry (a benchmark's own server) bundled exactly as the services are, into `outFile`. */
export async function bundleEntry(entry: string, outFile: string): Promise<void> {
  await build({ ...bundleOptions, entryPoints: [entry], outfile: outFile });
}

const bundleOptions = {
  absWorkingDir: repoRoot,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  sourcemap: 'linked',
  // Without comments and whitespace the source is a third smaller, and ASCII only: V8 keeps
  // a script's whole source in memory, as two bytes per character when one character is not
  // Latin-1 (a "—" in a comment made the 4 MB bundle an 8 MB string). Identifiers stay, so
  // stack traces and CPU profiles read as the code does.
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
  // Bundled CommonJS dependencies call require(); ESM has none, so each bundle makes one.
  banner: {
    js: "import { createRequire as __sekishoRequire } from 'node:module'; const require = __sekishoRequire(import.meta.url);",
  },
  external: ['tsx', 'tsx/*'],
  legalComments: 'linked',
  logLevel: 'error',
  // ts-proto's enum switches repeat aliased values (BEST_SPEED = COMPRESSION_LEVEL_1): harmless.
  logOverride: { 'duplicate-case': 'silent' },
} satisfies BuildOptions;

/** Fails with the command to run when a service was never built (the benchmarks, npm start). */
export function assertBuilt(service: BuiltService, dir = distDir): string {
  const path = distEntry(service, dir);
  if (!existsSync(path)) {
    throw new Error(`${path} does not exist: run \`npm run build\` (it bundles the services into dist/)`);
  }
  return path;
}
