import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, type ManagedProcess } from '@sekisho/devstack/processes';
import {
  RateLimitRequest,
  RateLimitResponse_Code,
  RateLimitServiceClient,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { descriptorKeys, rateLimitDomain } from '@sekisho/service-kit/contract';
import { transportFromEnv } from '@sekisho/service-kit/grpc-server';
import {
  type Absent,
  assertTwoCores,
  cores,
  loadAtConcurrencies,
  printHeader,
  profilesDir,
  type Row,
  recordIdleRss,
  runSettings,
  runtimeNote,
  spawnNodePinned,
  spawnPinned,
  twoWorkerPlacement,
  writeResults,
} from './common';
import { printProfiles } from './cpu-profile';
import { callMany, grpcBodyFile, grpcHeaders } from './grpc-call';
import { findH2load } from './h2load';
import type { NoopTransport } from './noop-servers';
import { commandsBetween, startPinnedRedis } from './redis-bench';
import { installReference, referenceYaml } from './reference-ratelimit';
import { startRateLimitService } from './services';

// npm run bench:ratelimit [-- --quick]
// ShouldRateLimit at 1, 16 and 64 calls in flight on one HTTP/2 connection: the transport
// ceilings (no-op servers), Sekisho's ratelimit-service with a real Redis and its policy over
// ADS, the same service serving the same limits from an envoyproxy/ratelimit file
// (RATELIMIT_CONFIG_DIR, no control plane), and envoyproxy/ratelimit on the same Redis with
// the same limits (the reference).

const settings = runSettings();
const benchStart = Date.now();
assertTwoCores();
findH2load();

const user = 'bench-user';
const routes = ['bench-1', 'bench-2', 'bench-3', 'bench-4'];
// Limits far above what a run sends: every call is a full decision (counted in Redis) and OK.
const limit = 1_000_000_000;

const policy = RateLimitPolicy.fromPartial({
  domain: rateLimitDomain,
  rules: routes.map((route) => ({
    id: `route:${route}/user/60s`,
    match: [
      { key: descriptorKeys.route, value: route },
      { key: descriptorKeys.user, value: '' },
    ],
    requestsPerWindow: limit,
    windowSeconds: 60,
  })),
});

/** The file domain: the reference's YAML, served by Sekisho's service from RATELIMIT_CONFIG_DIR. */
const fileDomain = 'bench_files';

const request = (descriptors: number, domain = rateLimitDomain) =>
  RateLimitRequest.fromPartial({
    domain,
    hitsAddend: 1,
    descriptors: routes.slice(0, descriptors).map((route) => ({
      entries: [
        { key: descriptorKeys.route, value: route },
        { key: descriptorKeys.user, value: user },
      ],
    })),
  });

const bodies = {
  1: await grpcBodyFile('rl-1', RateLimitRequest.encode(request(1)).finish()),
  4: await grpcBodyFile('rl-4', RateLimitRequest.encode(request(4)).finish()),
};
const fileBodies = {
  1: await grpcBodyFile('rl-file-1', RateLimitRequest.encode(request(1, fileDomain)).finish()),
  4: await grpcBodyFile('rl-file-4', RateLimitRequest.encode(request(4, fileDomain)).finish()),
};
const url = (port: number) => `http://127.0.0.1:${port}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`;
const loadFor = (port: number, descriptors: 1 | 4, domain = rateLimitDomain) => ({
  url: url(port),
  bodyFile: (domain === fileDomain ? fileBodies : bodies)[descriptors],
  headers: grpcHeaders,
});

/** One call through grpc-js, which reads the grpc-status h2load cannot see: the case is checked before it is timed. */
async function checkedCall(port: number, descriptors: 1 | 4, domain = rateLimitDomain): Promise<void> {
  const client = new RateLimitServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    const response = await new Promise<{ overallCode: RateLimitResponse_Code }>((resolve, reject) =>
      client.shouldRateLimit(request(descriptors, domain), (error, r) => (error ? reject(error) : resolve(r))),
    );
    if (response.overallCode !== RateLimitResponse_Code.OK) {
      throw new Error(`port ${port}: expected OK for ${descriptors} descriptor(s), got code ${response.overallCode}`);
    }
  } finally {
    client.close();
  }
}

/** Redis commands per ShouldRateLimit, from INFO commandstats around a fixed number of calls. */
async function commandsPerDecision(
  redis: Awaited<ReturnType<typeof startPinnedRedis>>,
  port: number,
  d: 1 | 4,
  domain = rateLimitDomain,
) {
  const client = new RateLimitServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const calls = 1_000;
  try {
    const before = await redis.commandCalls();
    await callMany(
      calls,
      16,
      () =>
        new Promise((resolve, reject) =>
          client.shouldRateLimit(request(d, domain), (error, r) => (error ? reject(error) : resolve(r))),
        ),
    );
    const delta = commandsBetween(before, await redis.commandCalls());
    return {
      redis_commands_per_decision: Math.round((delta.total / calls) * 100) / 100,
      redis_commands: Object.fromEntries(
        Object.entries(delta.perCommand).map(([name, n]) => [name, Math.round((n / calls) * 100) / 100]),
      ),
    };
  } finally {
    client.close();
  }
}

const started: Array<{ stop(): Promise<void> }> = [];
/** Spawn to ready (policy loaded, Redis connected) of each server, in ms. */
const startupMs: Record<string, number> = {};
const results: Array<Row | Absent> = [];
const notes: Record<string, unknown> = {
  load: 'h2load, one HTTP/2 connection, concurrency = streams in flight on it',
  server_core: cores.server,
  load_generator_core: cores.loadGenerator,
  redis_core: `${cores.redis} (shared by every case, on the load generator's core)`,
  services_run_under: runtimeNote(),
  // The services inherit this process's environment: SEKISHO_GRPC_TRANSPORT=grpc-js compares.
  services_grpc_transport: transportFromEnv(),
  duration_s: settings.durationS,
  warmup_s: settings.warmupS,
};

async function startNoop(transport: NoopTransport): Promise<{ proc: ManagedProcess; port: number }> {
  const port = await freePort();
  const proc = await spawnNodePinned(
    `noop-${transport}`,
    cores.server,
    'bench/src/noop-server-main.ts',
    ['ratelimit', transport, String(port)],
    undefined,
    settings.cpuProfile,
  );
  started.push(proc);
  await proc.waitForPort(port, 30_000);
  recordIdleRss(proc.pid);
  return { proc, port };
}

async function startService(redisUrl: string) {
  const service = await startRateLimitService(redisUrl, policy, { cpuProfile: settings.cpuProfile });
  started.push(service);
  startupMs['ratelimit-service'] = service.startupMs;
  recordIdleRss(service.proc.pid);
  return service;
}

/** The service with files only: the reference's YAML under domain bench_files, no control plane. */
async function startFileService(redisUrl: string) {
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-bench-files-'));
  started.push({ stop: () => rm(dir, { recursive: true, force: true }) });
  await writeFile(join(dir, `${fileDomain}.yaml`), referenceYaml(fileDomain, descriptorKeys, routes, limit));
  const [grpcPort, adminPort] = [await freePort(), await freePort()];
  const t0 = performance.now();
  const proc = await spawnNodePinned(
    'ratelimit-service-files',
    cores.server,
    'ratelimit-service/src/main.ts',
    [],
    {
      ...process.env,
      RATELIMIT_GRPC_PORT: String(grpcPort),
      RATELIMIT_ADMIN_PORT: String(adminPort),
      RATELIMIT_CONFIG_DIR: dir,
      RATELIMIT_REDIS_URL: redisUrl,
      LOG_LEVEL: 'warn',
    },
    settings.cpuProfile,
  );
  started.push(proc);
  await proc.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 30_000, (p) => p.status === 200);
  startupMs['ratelimit-service (files)'] = Math.round(performance.now() - t0);
  recordIdleRss(proc.pid);
  return { proc, port: grpcPort };
}

async function startReference(bin: string, redisPort: number, tuned: boolean) {
  const root = await mkdtemp(join(tmpdir(), 'sekisho-bench-reference-'));
  started.push({ stop: () => rm(root, { recursive: true, force: true }) });
  await mkdir(join(root, 'ratelimit', 'config'), { recursive: true });
  await writeFile(
    join(root, 'ratelimit', 'config', 'config.yaml'),
    referenceYaml(rateLimitDomain, descriptorKeys, routes, limit),
  );
  const [grpcPort, httpPort, debugPort, promPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const t0 = performance.now();
  const proc = spawnPinned(`envoyproxy-ratelimit${tuned ? '-tuned' : ''}`, cores.server, bin, [], {
    PATH: process.env.PATH,
    GOMAXPROCS: '1',
    HOST: '127.0.0.1',
    PORT: String(httpPort),
    GRPC_HOST: '127.0.0.1',
    GRPC_PORT: String(grpcPort),
    DEBUG_HOST: '127.0.0.1',
    DEBUG_PORT: String(debugPort),
    USE_STATSD: 'false',
    USE_PROMETHEUS: 'true',
    PROMETHEUS_ADDR: `127.0.0.1:${promPort}`,
    LOG_LEVEL: 'warn',
    REDIS_SOCKET_TYPE: 'tcp',
    REDIS_URL: `127.0.0.1:${redisPort}`,
    RUNTIME_ROOT: root,
    RUNTIME_SUBDIRECTORY: 'ratelimit',
    RUNTIME_WATCH_ROOT: 'false',
    ...(tuned ? { REDIS_PIPELINE_WINDOW: '150us', REDIS_PIPELINE_LIMIT: '8' } : {}),
  });
  started.push(proc);
  await proc.waitForHttp(`http://127.0.0.1:${httpPort}/healthcheck`, 30_000, (p) => p.status === 200);
  startupMs[`envoyproxy-ratelimit${tuned ? ' (tuned)' : ''}`] = Math.round(performance.now() - t0);
  recordIdleRss(proc.pid);
  console.log(
    `envoyproxy/ratelimit with ${tuned ? 'REDIS_PIPELINE_WINDOW=150us REDIS_PIPELINE_LIMIT=8' : 'its defaults'}:`,
  );
  return { proc, port: grpcPort };
}

const peak = (rows: Row[]) => Math.max(...rows.map((r) => r.throughput_per_s));

try {
  const redis = await startPinnedRedis();
  started.push(redis);
  printHeader();

  // Transport ceilings.
  for (const transport of ['grpc-js', 'http2', 'service-kit'] as const) {
    const noop = await startNoop(transport);
    await checkedCall(noop.port, 1);
    results.push(...(await loadAtConcurrencies(`noop-${transport}`, noop.proc, settings, loadFor(noop.port, 1))));
    await noop.proc.stop();
  }

  // Sekisho's ratelimit-service.
  const service = await startService(redis.url);
  const sekisho: Record<1 | 4, Row[]> = { 1: [], 4: [] };
  for (const d of [1, 4] as const) {
    await checkedCall(service.port, d);
    const commands = await commandsPerDecision(redis, service.port, d);
    sekisho[d] = await loadAtConcurrencies(
      `${d}-descriptor${d === 1 ? '' : 's'}`,
      service.proc,
      settings,
      loadFor(service.port, d),
      () => commands,
    );
    results.push(...sekisho[d]);
  }
  // The service stays up (idle) for the fixed-rate comparison below.

  // The same service as two workers sharing the port (SEKISHO_WORKERS=2), over two h2load
  // connections (the primary hands each connection to one worker). Not under --cpu-prof: the
  // workers would inherit the flag and write over each other's profile.
  const placement = twoWorkerPlacement();
  const two = await startRateLimitService(redis.url, policy, {
    name: 'ratelimit-service-2-workers',
    workers: 2,
    serverCores: placement.serverCores,
  });
  started.push(two);
  startupMs['ratelimit-service (2 workers)'] = two.startupMs;
  recordIdleRss(two.proc.pid);
  const workerRows: Record<1 | 4, Row[]> = { 1: [], 4: [] };
  for (const d of [1, 4] as const) {
    await checkedCall(two.port, d);
    workerRows[d] = await loadAtConcurrencies(
      `2-workers-${d}-descriptor${d === 1 ? '' : 's'}`,
      two.proc,
      settings,
      { ...loadFor(two.port, d), connections: 2 },
      () => ({ workers: 2, connections: 2 }),
      placement,
    );
    results.push(...workerRows[d]);
  }
  await two.stop();
  notes.two_workers = {
    placement: placement.note,
    ...Object.fromEntries(
      ([1, 4] as const).map((d) => {
        const best = (rows: Row[]) => rows.reduce((a, b) => (b.throughput_per_s > a.throughput_per_s ? b : a));
        const one = best(sekisho[d]);
        const both = best(workerRows[d]);
        return [
          `${d}-descriptor${d === 1 ? '' : 's'}`,
          {
            one_process_peak_per_s: one.throughput_per_s,
            two_workers_peak_per_s: both.throughput_per_s,
            scaling: Math.round((both.throughput_per_s / one.throughput_per_s) * 100) / 100,
            one_process_calls_per_busy_core_s: one.calls_per_busy_core_s,
            two_workers_calls_per_busy_core_s: both.calls_per_busy_core_s,
            two_workers_busy_cores: both.server_busy_cores,
          },
        ];
      }),
    ),
  };
  console.log(`\n${JSON.stringify(notes.two_workers, null, 2)}`);

  // The same service serving the same limits from a configuration file (a file domain).
  const files = await startFileService(redis.url);
  const fileRows: Record<1 | 4, Row[]> = { 1: [], 4: [] };
  for (const d of [1, 4] as const) {
    await checkedCall(files.port, d, fileDomain);
    const commands = await commandsPerDecision(redis, files.port, d, fileDomain);
    fileRows[d] = await loadAtConcurrencies(
      `file-${d}-descriptor${d === 1 ? '' : 's'}`,
      files.proc,
      settings,
      loadFor(files.port, d, fileDomain),
      () => commands,
    );
    results.push(...fileRows[d]);
  }
  await files.proc.stop();
  const fileComparison = Object.fromEntries(
    ([1, 4] as const).map((d) => [
      `file-${d}-descriptor${d === 1 ? '' : 's'}`,
      { peak_per_s: peak(fileRows[d]), policy_domain_peak_per_s: peak(sekisho[d]) },
    ]),
  );
  notes.file_domain = fileComparison;
  console.log(`\n${JSON.stringify(fileComparison, null, 2)}`);

  // The reference, at its defaults and with Redis pipelining tuned; the faster is reported.
  const installed = await installReference(join(repoRoot, '.cache', 'bench', 'bin'));
  if (!installed.ok) {
    for (const d of [1, 4]) {
      results.push({ case: `reference-${d}-descriptor${d === 1 ? '' : 's'}`, absent: true, reason: installed.reason });
    }
    console.log(`reference cases absent: ${installed.reason}`);
  } else {
    notes.reference = { binary: installed.bin, version: installed.version };
    const runs: Record<'defaults' | 'tuned', Record<1 | 4, Row[]>> = {
      defaults: { 1: [], 4: [] },
      tuned: { 1: [], 4: [] },
    };
    const references: Partial<Record<'defaults' | 'tuned', { proc: ManagedProcess; port: number }>> = {};
    for (const config of ['defaults', 'tuned'] as const) {
      const reference = await startReference(installed.bin, redis.port, config === 'tuned');
      references[config] = reference;
      for (const d of [1, 4] as const) {
        await checkedCall(reference.port, d);
        const commands = await commandsPerDecision(redis, reference.port, d);
        const name = `reference-${d}-descriptor${d === 1 ? '' : 's'}`;
        runs[config][d] = await loadAtConcurrencies(name, reference.proc, settings, loadFor(reference.port, d), () => ({
          ...commands,
          reference_config: config === 'tuned' ? 'REDIS_PIPELINE_WINDOW=150us REDIS_PIPELINE_LIMIT=8' : 'defaults',
        }));
      }
    }
    const offered: Record<string, unknown> = {};
    const comparison: Record<string, unknown> = {};
    for (const d of [1, 4] as const) {
      const best = peak(runs.tuned[d]) >= peak(runs.defaults[d]) ? 'tuned' : 'defaults';
      const other = best === 'tuned' ? 'defaults' : 'tuned';
      results.push(...runs[best][d].map((r) => ({ ...r, other_config_peak_per_s: peak(runs[other][d]) })));
      notes[`reference_${d}_${other}_rows_not_reported`] = runs[other][d];
      // The same offered load for both sides: half of what the slower of the two sustains.
      const rate = Math.floor(Math.min(peak(sekisho[d]), peak(runs[best][d])) / 2);
      offered[`${d}`] = rate;
      const reference = references[best];
      if (!reference) throw new Error(`reference run ${best} missing`);
      const fixed = { ...settings, concurrencies: [16] };
      const atRate: Record<string, Row> = {};
      for (const [name, target] of [
        [`reference-${d}-descriptor${d === 1 ? '' : 's'}`, reference],
        [`${d}-descriptor${d === 1 ? '' : 's'}`, service],
      ] as const) {
        const rows = await loadAtConcurrencies(
          `${name}@${rate}/s`,
          target.proc,
          fixed,
          { ...loadFor(target.port, d), ratePerConnection: rate },
          () => ({ offered_per_s: rate, base_case: name }),
        );
        results.push(...rows);
        atRate[name] = rows[0] as Row;
      }
      const sekishoName = `${d}-descriptor${d === 1 ? '' : 's'}`;
      comparison[sekishoName] = {
        peak_per_s: peak(sekisho[d]),
        reference_peak_per_s: peak(runs[best][d]),
        reference_config: best,
        throughput_ratio: Math.round((peak(sekisho[d]) / peak(runs[best][d])) * 100) / 100,
        target_ratio: 1.5,
        offered_per_s: rate,
        p99_ms: atRate[sekishoName]?.p99_ms,
        reference_p99_ms: atRate[`reference-${sekishoName}`]?.p99_ms,
      };
    }
    notes.fixed_offered_load_per_s = offered;
    notes.comparison = comparison;
    console.log(`\n${JSON.stringify(comparison, null, 2)}`);
  }

  notes.startup_ms = startupMs;
  const file = await writeResults('ratelimit', results, notes);
  console.log(`\nwrote ${file}`);
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => {});
  if (settings.cpuProfile) {
    await printProfiles(profilesDir, benchStart);
    console.log(`\nCPU profiles (open in Chrome DevTools): ${profilesDir}`);
  }
  for (const body of [...Object.values(bodies), ...Object.values(fileBodies)])
    if (existsSync(body)) await rm(body, { force: true });
}
