import { readFileSync } from 'node:fs';
import { credentials } from '@grpc/grpc-js';
import { productionNodeEnv, productionNodeFlags } from '@sekisho/devstack/build';
import { createFirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import {
  AuthorizationClient,
  CheckRequest,
  type CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import {
  RateLimitRequest,
  type RateLimitResponse,
  RateLimitResponse_Code,
  RateLimitServiceClient,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { assertTwoCores, cores, cpuSeconds, type Row, rssMb, runSettings, runtimeNote, writeResults } from './common';
import {
  benchAuthzPolicy,
  benchCheckRequest,
  benchProjectId,
  benchRateLimitPolicy,
  benchRateLimitRequest,
} from './fixtures';
import { grpcBodyFile, grpcHeaders } from './grpc-call';
import { findH2load, runH2load } from './h2load';
import { startPinnedRedis } from './redis-bench';
import { type StartedService, startExtAuthzService, startRateLimitService } from './services';
import { median } from './stats';

// npm run bench:memory [-- --rounds <n>] [--service ratelimit|authz] [--candidates <name,name>]
//   [--custom "<node flags> [NAME=value …]"]
// Runtime candidates (V8/Node flags, environment) for the two policy services, side by side:
// each round starts every candidate in turn (A, B, C, A, B, C, …) so that a busy machine
// slows them alike. Per start: RSS after 3 s idle (with its anonymous / file-backed split and
// thread count from /proc), then a 3 s peak at 64 in flight and 3 s at half of that peak (16
// in flight), RSS sampled every 200 ms; ext-authz also uncached (a signature per call).
// Throughput is reported relative to `production` in the same round.

export interface Candidate {
  name: string;
  flags: readonly string[];
  env: Readonly<Record<string, string>>;
}

// As measured in bench/README.md ("Memory: what the idle services hold and the flags"); the
// first rounds ran without MALLOC_ARENA_MAX, the later ones (old-384, heap-growing-*) with it.
const arena = { MALLOC_ARENA_MAX: '2' };
const candidates: Candidate[] = [
  { name: 'production', flags: productionNodeFlags, env: productionNodeEnv },
  { name: 'until-2026-12-02', flags: ['--max-semi-space-size=2'], env: {} },
  { name: 'semi-1', flags: ['--max-semi-space-size=1'], env: {} },
  { name: 'optimize-for-size', flags: ['--optimize-for-size', '--max-semi-space-size=2'], env: {} },
  { name: 'single-threaded-gc', flags: ['--single-threaded-gc', '--max-semi-space-size=2'], env: {} },
  { name: 'v8-pool-1', flags: ['--v8-pool-size=1', '--max-semi-space-size=2'], env: {} },
  { name: 'arena-2', flags: ['--max-semi-space-size=2'], env: arena },
  { name: 'old-64', flags: ['--max-old-space-size=64', '--max-semi-space-size=2'], env: {} },
  { name: 'old-384', flags: ['--max-semi-space-size=2', '--max-old-space-size=384'], env: arena },
  { name: 'heap-growing-100', flags: ['--max-semi-space-size=2', '--heap-growing-percent=100'], env: arena },
  { name: 'heap-growing-200', flags: ['--max-semi-space-size=2', '--heap-growing-percent=200'], env: arena },
  {
    name: 'size-combo',
    flags: ['--optimize-for-size', '--max-semi-space-size=1', '--v8-pool-size=1'],
    env: arena,
  },
  // What the Dockerfiles ran until 2026-12-02: node's source-map support parses each bundle's map.
  { name: 'source-maps', flags: ['--max-semi-space-size=2', '--enable-source-maps'], env: {} },
];

interface MemoryArgs {
  rounds: number;
  services: Array<'ratelimit' | 'authz'>;
  candidates: Candidate[];
}

function memoryArgs(argv: string[]): MemoryArgs {
  const out: MemoryArgs = { rounds: 2, services: ['ratelimit', 'authz'], candidates };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--rounds') {
      out.rounds = Number(value());
      if (!Number.isInteger(out.rounds) || out.rounds < 1 || out.rounds > 10) {
        throw new Error(`--rounds: expected a whole number from 1 to 10, got "${argv[i]}"`);
      }
    } else if (arg === '--service') {
      const v = value();
      if (v !== 'ratelimit' && v !== 'authz') throw new Error(`--service: expected ratelimit or authz, got "${v}"`);
      out.services = [v];
    } else if (arg === '--candidates') {
      const names = value().split(',');
      out.candidates = names.map((name) => {
        const found = candidates.find((c) => c.name === name);
        if (!found) throw new Error(`--candidates: no "${name}" (known: ${candidates.map((c) => c.name).join(', ')})`);
        return found;
      });
    } else if (arg === '--custom') {
      // One more candidate per --custom (custom-1, custom-2, …): node flags and NAME=value variables.
      const words = value().split(' ').filter(Boolean);
      const env = Object.fromEntries(words.filter((w) => /^[A-Z_]+=/.test(w)).map((w) => w.split('=', 2)));
      const name = `custom-${out.candidates.filter((c) => c.name.startsWith('custom-')).length + 1}`;
      out.candidates = [...out.candidates, { name, flags: words.filter((w) => !/^[A-Z_]+=/.test(w)), env }];
    } else {
      throw new Error(`unknown argument "${arg}" (accepted: --rounds, --service, --candidates, --custom)`);
    }
  }
  return out;
}

/** Resident memory of one process by kind, in MB, from /proc/<pid>/status. */
export function residentKinds(status: string): { anon_mb: number; file_mb: number; threads: number } {
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status);
    if (!match) throw new Error(`no ${name} in /proc/<pid>/status`);
    return Number(match[1]);
  };
  const mb = (kb: number) => Math.round((kb / 1024) * 10) / 10;
  return { anon_mb: mb(field('RssAnon')), file_mb: mb(field('RssFile')), threads: field('Threads') };
}

const args = memoryArgs(process.argv.slice(2));
runSettings([]);
assertTwoCores();
findH2load();

interface Target {
  service: string;
  start(candidate: Candidate, tokenCacheSize?: number): Promise<StartedService>;
  bodyFile: string;
  path: string;
}

async function loaded(service: StartedService, target: Target, concurrency: number, rate?: number) {
  let peak = rssMb(service.proc.pid);
  const cpuBefore = cpuSeconds(service.proc.pid);
  const sampler = setInterval(() => {
    // A process that died mid-run has no VmRSS: the h2load run then fails and says so.
    if (!service.proc.exitInfo()) peak = Math.max(peak, rssMb(service.proc.pid));
  }, 200);
  try {
    const result = await runH2load({
      url: `http://127.0.0.1:${service.port}${target.path}`,
      bodyFile: target.bodyFile,
      headers: grpcHeaders,
      concurrency,
      ...(rate ? { ratePerConnection: rate } : {}),
      durationS: 3,
      warmupS: rate ? 0 : 1,
      cores: cores.loadGenerator,
    });
    if (result.failed > 0) throw new Error(`${target.service}: ${result.failed} calls failed`);
    // The server's own CPU per call: steadier than throughput on a shared machine.
    const cpu = cpuSeconds(service.proc.pid) - cpuBefore;
    const callsPerCpuS = cpu > 0 ? Math.round(result.requests / cpu) : null;
    return { result, rss: Math.max(peak, rssMb(service.proc.pid)), callsPerCpuS };
  } finally {
    clearInterval(sampler);
  }
}

const rows: Row[] = [];

async function measure(round: number, candidate: Candidate, target: Target, caseName: string, cacheSize?: number) {
  const service = await target.start(candidate, cacheSize);
  try {
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const idle = rssMb(service.proc.pid);
    const kinds = residentKinds(readFileSync(`/proc/${service.proc.pid}/status`, 'utf8'));
    const peak = await loaded(service, target, 64);
    const half = await loaded(service, target, 16, Math.floor(peak.result.throughput_per_s / 2));
    const row: Row = {
      case: caseName,
      candidate: candidate.name,
      round,
      concurrency: 64,
      throughput_per_s: peak.result.throughput_per_s,
      calls_per_cpu_s: peak.callsPerCpuS,
      p50_ms: peak.result.p50_ms,
      p99_ms: peak.result.p99_ms,
      p999_ms: peak.result.p999_ms,
      rss_idle_mb: idle,
      ...kinds,
      rss_peak_load_mb: peak.rss,
      rss_half_load_mb: half.rss,
      half_throughput_per_s: half.result.throughput_per_s,
      half_p99_ms: half.result.p99_ms,
      node_flags: candidate.flags,
      env: candidate.env,
      load_average: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    };
    rows.push(row);
    console.log(
      `r${round} ${caseName.padEnd(18)} ${candidate.name.padEnd(19)} idle ${String(idle).padStart(5)} MB (anon ${kinds.anon_mb}, file ${kinds.file_mb}, ${kinds.threads} threads)  @64 ${String(peak.result.throughput_per_s).padStart(6)}/s (${peak.callsPerCpuS} per CPU s) ${String(peak.rss).padStart(5)} MB  @half ${String(half.rss).padStart(5)} MB  load ${row.load_average}`,
    );
  } finally {
    await service.stop();
  }
}

const started: Array<{ stop(): Promise<void> }> = [];
try {
  const targets: Array<{ target: Target; cases: Array<[string, number | undefined]> }> = [];
  if (args.services.includes('ratelimit')) {
    const redis = await startPinnedRedis();
    started.push(redis);
    const policy = benchRateLimitPolicy('memory');
    const request = benchRateLimitRequest('memory', 'memory-user');
    const target: Target = {
      service: 'ratelimit-service',
      bodyFile: await grpcBodyFile('memory-rl', RateLimitRequest.encode(request).finish()),
      path: '/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit',
      async start(candidate) {
        const service = await startRateLimitService(redis.url, policy, {
          nodeFlags: candidate.flags,
          env: candidate.env,
        });
        const client = new RateLimitServiceClient(`127.0.0.1:${service.port}`, credentials.createInsecure());
        const response = await new Promise<RateLimitResponse>((resolve, reject) =>
          client.shouldRateLimit(request, (error, r) => (error ? reject(error) : resolve(r))),
        ).finally(() => client.close());
        if (response.overallCode !== RateLimitResponse_Code.OK) throw new Error('ratelimit-service: expected OK');
        return service;
      },
    };
    targets.push({ target, cases: [['ratelimit-1', undefined]] });
  }
  if (args.services.includes('authz')) {
    const keys = await createFirebaseKeyServer();
    started.push({ stop: () => keys.close() });
    const token = await mintIdToken(keys.signingKey, {
      projectId: benchProjectId,
      uid: 'memory-user',
      expiresIn: 3600,
    });
    const policy = benchAuthzPolicy;
    const request = benchCheckRequest(token, 'memory');
    const target: Target = {
      service: 'ext-authz',
      bodyFile: await grpcBodyFile('memory-authz', CheckRequest.encode(request).finish()),
      path: '/envoy.service.auth.v3.Authorization/Check',
      async start(candidate, tokenCacheSize = 10_000) {
        const service = await startExtAuthzService(keys.url, policy, {
          nodeFlags: candidate.flags,
          env: { ...candidate.env, EXT_AUTHZ_TOKEN_CACHE_SIZE: String(tokenCacheSize) },
        });
        const client = new AuthorizationClient(`127.0.0.1:${service.port}`, credentials.createInsecure());
        const response = await new Promise<CheckResponse>((resolve, reject) =>
          client.check(request, (error, r) => (error ? reject(error) : resolve(r))),
        ).finally(() => client.close());
        if (response.status?.code !== 0) throw new Error('ext-authz: expected OK for a valid token');
        return service;
      },
    };
    targets.push({
      target,
      cases: [
        ['authz-cached', 10_000],
        ['authz-uncached', 0],
      ],
    });
  }

  for (let round = 1; round <= args.rounds; round++) {
    for (const { target, cases } of targets) {
      for (const [caseName, cacheSize] of cases) {
        for (const candidate of args.candidates) {
          // A start that fails (the service killed from outside, a port race) loses that sample only.
          await measure(round, candidate, target, caseName, cacheSize).catch((error: unknown) => {
            console.log(
              `r${round} ${caseName} ${candidate.name}: no sample (${(error as Error).message.split('\n')[0]})`,
            );
          });
        }
      }
    }
  }

  // Medians per case and candidate; throughput as the median of per-round ratios to production.
  const summary: Record<string, unknown> = {};
  for (const caseName of new Set(rows.map((r) => r.case))) {
    console.log(`\n${caseName}`);
    const byCandidate: Record<string, unknown> = {};
    summary[caseName] = byCandidate;
    for (const candidate of args.candidates) {
      const mine = rows.filter((r) => r.case === caseName && r.candidate === candidate.name);
      const ratios = mine.flatMap((r) => {
        const base = rows.find((b) => b.case === caseName && b.round === r.round && b.candidate === 'production');
        return base ? [r.throughput_per_s / base.throughput_per_s] : [];
      });
      const pick = (field: string) => median(mine.map((r) => Number(r[field])));
      const entry = {
        rss_idle_mb: pick('rss_idle_mb'),
        anon_mb: pick('anon_mb'),
        file_mb: pick('file_mb'),
        threads: pick('threads'),
        rss_peak_load_mb: pick('rss_peak_load_mb'),
        rss_half_load_mb: pick('rss_half_load_mb'),
        throughput_per_s: pick('throughput_per_s'),
        throughput_vs_production: ratios.length ? Math.round(median(ratios) * 100) / 100 : null,
        throughput_vs_production_each_round: ratios.map((x) => Math.round(x * 100) / 100),
      };
      byCandidate[candidate.name] = entry;
      console.log(
        `  ${candidate.name.padEnd(19)} idle ${entry.rss_idle_mb} MB (anon ${entry.anon_mb}, file ${entry.file_mb})  peak ${entry.rss_peak_load_mb} MB  half ${entry.rss_half_load_mb} MB  ${entry.throughput_per_s}/s  x${entry.throughput_vs_production} [${entry.throughput_vs_production_each_round.join(', ')}]`,
      );
    }
  }
  const file = await writeResults('memory', rows, {
    services_run_under: runtimeNote(),
    production: { node_flags: productionNodeFlags, env: productionNodeEnv },
    rounds: args.rounds,
    order: 'each round: every case, each candidate in turn (alternated)',
    load: 'h2load, one connection: 3 s at 64 in flight (1 s warm-up), then 3 s at half that peak with 16 in flight',
    server_core: cores.server,
    load_generator_core: cores.loadGenerator,
    summary,
  });
  console.log(`\nwrote ${file}`);
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => {});
}
