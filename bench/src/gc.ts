import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { productionNodeEnv, productionNodeFlags } from '@sekisho/devstack/build';
import { createFirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, type ManagedProcess } from '@sekisho/devstack/processes';
import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { RateLimitRequest } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { assertTwoCores, cores, type Row, runtimeNote, spawnNodePinned, writeResults } from './common';
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
import { startExtAuthzService, startRateLimitService } from './services';
import { median } from './stats';

// npm run bench:gc [-- --quick] [--candidate "<node flags>"]... [--case <name>]... [--env KEY=VALUE]... [--rate <calls/s>]
// What the garbage collector costs each service at a fixed offered load, V8 flag sets side by
// side in alternation: bytes promoted to the old generation per call, full collections and
// their longest pause (v8.GCProfiler, preloaded from bench/probe/gc-probe.cjs over the measured
// window only), and the latency percentiles h2load saw in the same window. Without
// --candidate: production's flags against the same flags with --single-threaded-gc toggled.

assertTwoCores();
findH2load();
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const candidates: string[][] = [];
const onlyCases: string[] = [];
const extraEnv: Record<string, string> = {};
let rateOverride: number | undefined;
for (let i = 0; i < argv.length; i++) {
  const [arg, value] = [argv[i], argv[i + 1]];
  if (arg === '--quick') continue;
  if (arg === '--candidate' && value !== undefined) candidates.push(value.split(' ').filter(Boolean));
  else if (arg === '--case' && value !== undefined) onlyCases.push(value);
  else if (arg === '--rate' && value !== undefined && /^[1-9][0-9]*$/.test(value)) rateOverride = Number(value);
  else if (arg === '--env' && value !== undefined && /^[A-Z_][A-Z0-9_]*=/.test(value))
    extraEnv[value.slice(0, value.indexOf('='))] = value.slice(value.indexOf('=') + 1);
  else
    throw new Error(
      `bench:gc: unexpected argument "${arg}" (expected --quick, --candidate "<flags>", --case <name>, --env KEY=VALUE, --rate <calls/s>)`,
    );
  i++;
}
if (candidates.length === 0) {
  const toggled = productionNodeFlags.includes('--single-threaded-gc')
    ? productionNodeFlags.filter((f) => f !== '--single-threaded-gc')
    : [...productionNodeFlags, '--single-threaded-gc'];
  candidates.push([...productionNodeFlags], toggled);
}
const windowS = quick ? 8 : 15;
const rounds = quick ? 1 : 2;
const probe = join(repoRoot, 'bench', 'probe', 'gc-probe.cjs');

// Offered loads well inside each case's peak on this machine (bench/README.md), over 16 streams.
const cases = [
  { name: 'noop-service-kit', rate: 8_000 },
  { name: 'ratelimit-1-descriptor', rate: 8_000 },
  { name: 'authz-cached', rate: 8_000 },
  { name: 'authz-uncached', rate: 6_000 },
] as const;
type CaseName = (typeof cases)[number]['name'];
for (const name of onlyCases)
  if (!cases.some((c) => c.name === name))
    throw new Error(`bench:gc: no case "${name}" (cases: ${cases.map((c) => c.name).join(', ')})`);
const selected = onlyCases.length > 0 ? cases.filter((c) => onlyCases.includes(c.name)) : cases;

const keys = await createFirebaseKeyServer();
const redis = await startPinnedRedis();
const token = await mintIdToken(keys.signingKey, { projectId: benchProjectId, uid: 'bench-user', expiresIn: 3600 });
const rlPolicy = benchRateLimitPolicy('bench-1');
const rlBody = await grpcBodyFile(
  'gc-rl',
  RateLimitRequest.encode(benchRateLimitRequest('bench-1', 'bench-user')).finish(),
);
const checkBody = await grpcBodyFile('gc-check', CheckRequest.encode(benchCheckRequest(token)).finish());
const rlPath = '/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit';
const checkPath = '/envoy.service.auth.v3.Authorization/Check';

async function start(
  name: CaseName,
  flags: string[],
  probeOut: string,
): Promise<{ proc: ManagedProcess; url: string; body: string; stop(): Promise<void> }> {
  const nodeFlags = [...flags, '--require', probe];
  // Production's environment (MALLOC_ARENA_MAX), which explicit node flags otherwise leave out.
  const env = { ...productionNodeEnv, ...extraEnv, SEKISHO_GC_PROBE_OUT: probeOut };
  if (name === 'noop-service-kit') {
    const port = await freePort();
    const proc = await spawnNodePinned(
      'noop-service-kit',
      cores.server,
      'bench/src/noop-server-main.ts',
      ['ratelimit', 'service-kit', String(port)],
      { ...process.env, ...env },
      false,
      nodeFlags,
    );
    await proc.waitForPort(port, 30_000);
    return { proc, url: `http://127.0.0.1:${port}${rlPath}`, body: rlBody, stop: () => proc.stop() };
  }
  if (name === 'ratelimit-1-descriptor') {
    const s = await startRateLimitService(redis.url, rlPolicy, { nodeFlags, env });
    return { proc: s.proc, url: `http://127.0.0.1:${s.port}${rlPath}`, body: rlBody, stop: () => s.stop() };
  }
  const s = await startExtAuthzService(keys.url, benchAuthzPolicy, {
    nodeFlags,
    env: { ...env, EXT_AUTHZ_TOKEN_CACHE_SIZE: name === 'authz-cached' ? '10000' : '0' },
  });
  return { proc: s.proc, url: `http://127.0.0.1:${s.port}${checkPath}`, body: checkBody, stop: () => s.stop() };
}

interface GcEvent {
  gcType: string;
  cost: number;
  beforeGC: { heapSpaceStatistics: Array<{ spaceName: string; spaceUsedSize: number }> };
  afterGC: { heapSpaceStatistics: Array<{ spaceName: string; spaceUsedSize: number }> };
}
interface GcRow {
  node_flags: string;
  max_ms: number;
  promoted_bytes_per_call: number;
  full_gcs: number;
  full_gc_max_ms: number;
}
const oldUsed = (s: GcEvent['beforeGC']) =>
  s.heapSpaceStatistics.find((x) => x.spaceName === 'old_space')?.spaceUsedSize ?? 0;

async function measure(name: CaseName, rate: number, flags: string[], round: number): Promise<Row & GcRow> {
  const probeOut = join(tmpdir(), `sekisho-bench-gc-${process.pid}-${Date.now()}.json`);
  const server = await start(name, flags, probeOut);
  try {
    const load = { url: server.url, bodyFile: server.body, headers: grpcHeaders, cores: cores.loadGenerator };
    // Warm-up at full speed (JIT, pools, caches), then the measured window at the fixed rate.
    await runH2load({ ...load, concurrency: 16, durationS: 3, warmupS: 0 });
    process.kill(server.proc.pid, 'SIGUSR2');
    const result = await runH2load({
      ...load,
      concurrency: 16,
      durationS: windowS,
      warmupS: 0,
      ratePerConnection: rate,
    });
    process.kill(server.proc.pid, 'SIGUSR2');
    const deadline = Date.now() + 10_000;
    let text: string | undefined;
    while (text === undefined) {
      text = await readFile(probeOut, 'utf8').catch(() => undefined);
      if (text === undefined && Date.now() > deadline) throw new Error(`${name}: the GC probe wrote nothing`);
      if (text === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const events = (JSON.parse(text) as { statistics: GcEvent[] }).statistics;
    const scavenges = events.filter((e) => e.gcType === 'Scavenge' || e.gcType === 'MinorMarkSweep');
    const full = events.filter((e) => e.gcType === 'MarkSweepCompact');
    const promoted = scavenges.reduce((sum, e) => sum + Math.max(0, oldUsed(e.afterGC) - oldUsed(e.beforeGC)), 0);
    const row = {
      case: name,
      node_flags: flags.join(' '),
      round,
      concurrency: 16,
      offered_per_s: rate,
      throughput_per_s: result.throughput_per_s,
      calls: result.requests,
      failed: result.failed + result.non_2xx,
      p50_ms: result.p50_ms,
      p99_ms: result.p99_ms,
      p999_ms: result.p999_ms,
      max_ms: result.max_ms,
      promoted_mb: Math.round(promoted / 1e4) / 100,
      promoted_bytes_per_call: Math.round(promoted / Math.max(1, result.requests)),
      young_gcs: scavenges.length,
      full_gcs: full.length,
      full_gc_max_ms: Math.round(Math.max(0, ...full.map((e) => e.cost)) / 10) / 100,
      young_gc_max_ms: Math.round(Math.max(0, ...scavenges.map((e) => e.cost)) / 10) / 100,
    };
    console.log(
      `${row.case.padEnd(24)} [${row.node_flags}] round ${round}: ${row.calls} calls, p50 ${row.p50_ms} p99 ${row.p99_ms} p99.9 ${row.p999_ms} max ${row.max_ms} ms; promoted ${row.promoted_bytes_per_call} B/call, ${row.full_gcs} full GCs (longest ${row.full_gc_max_ms} ms), longest young GC ${row.young_gc_max_ms} ms`,
    );
    return row;
  } finally {
    await server.stop();
    await rm(probeOut, { force: true });
  }
}

const rows: Array<Row & GcRow> = [];
try {
  for (const { name, rate: usual } of selected) {
    const rate = rateOverride ?? usual;
    for (let round = 1; round <= rounds; round++) {
      // Alternated within each round, so drift on the machine hits every candidate alike.
      for (const flags of round % 2 === 1 ? candidates : [...candidates].reverse()) {
        rows.push(await measure(name, rate, flags, round));
      }
    }
  }
} finally {
  await redis.stop();
  keys.close();
}
const rounded = (values: number[]) => Math.round(median(values) * 1000) / 1000;
const summary = selected.flatMap(({ name }) =>
  candidates.map((flags) => {
    const mine = rows.filter((r) => r.case === name && r.node_flags === flags.join(' '));
    return {
      case: name,
      node_flags: flags.join(' '),
      p99_ms: rounded(mine.map((r) => r.p99_ms)),
      p999_ms: rounded(mine.map((r) => r.p999_ms)),
      max_ms: rounded(mine.map((r) => r.max_ms)),
      promoted_bytes_per_call: rounded(mine.map((r) => r.promoted_bytes_per_call)),
      full_gcs: rounded(mine.map((r) => r.full_gcs)),
      full_gc_max_ms: rounded(mine.map((r) => r.full_gc_max_ms)),
    };
  }),
);
console.table(summary);
const file = await writeResults('gc', rows, {
  window_s: windowS,
  rounds,
  load: 'h2load -c 1 -m 16 --rps <offered_per_s>, after 3 s at full speed',
  runtime: runtimeNote(),
  service_env: extraEnv,
  summary_medians: summary,
});
console.log(`wrote ${file}`);
