import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveEnvoyBinary } from '@sekisho/devstack/envoy';
import { generateSigningKey } from '@sekisho/devstack/firebase-keys';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { stringify } from 'yaml';
import {
  assertTwoCores,
  cores,
  printHeader,
  printRow,
  type Row,
  rssMb,
  runSettings,
  runtimeNote,
  spawnPinned,
  writeResults,
} from './common';
import { baselineBootstrap } from './gateway-envoy';
import { findH2load, type LoadOptions, runH2load } from './h2load';
import { commandOf, descendantsOf, gatewayProcessName, pinProcess } from './pin';
import { median } from './stats';

// npm run bench:gateway [-- --quick]
// HTTP/1.1 GETs of one authenticated route through a real Envoy (--concurrency 1): with no
// policy filters (envoy-only), with Envoy's own jwt_authn + rbac + local_ratelimit
// (envoy-native), and through the whole Sekisho stack (ext_authz and ratelimit over gRPC to
// ext-authz and ratelimit-service, Redis, the control plane over ADS), all to equal upstreams.
// The stack runs twice: `sekisho` counts the per-user limits in ext-authz's Check
// (perUserLimits: ext-authz), `sekisho-two-calls` in a second call to the rate-limit service.
// Saturation is measured again in alternating rounds (3, 1 with --quick); the median of the
// rounds' ratios is what `comparison.saturation` compares with the target.

const settings = runSettings();
assertTwoCores();
findH2load();

const routePath = '/api/v1/customer/profile';
const projectId = 'sekisho-bench';
const groupClaim = 'tier';
const group = 'basic_customer';

const dir = await mkdtemp(join(tmpdir(), 'sekisho-bench-gateway-'));
const started: Array<{ stop(): Promise<void> }> = [];
const results: Row[] = [];

// The gateway's processes on the server core; this process (the demo upstream and the key
// server live here) with h2load on the other, so the upstream costs every case the same.
pinProcess(process.pid, cores.loadGenerator);

try {
  // Two Sekisho stacks, told apart by where the per-user limits are counted: `sekisho`, in
  // ext-authz's Check (perUserLimits: ext-authz: one gRPC call per request), and
  // `sekisho-two-calls`, by Envoy's second ratelimit filter calling the rate-limit service (the
  // default). Each has its own upstream (the baselines use the first's).
  const signingKey = await generateSigningKey();
  const startSekisho = async (name: string, perUserLimits: 'ext-authz' | 'rate-limit-service') => {
    const [gatewayPort, upstreamPort, extAuthzPort, rateLimitPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const definitionFile = join(dir, `${name}.gateway.yaml`);
    await writeFile(
      definitionFile,
      stringify({
        listeners: { http: { address: '127.0.0.1', port: gatewayPort } },
        identity: { firebase: { projectId }, groupClaim, groups: { [group]: ['read:own_profile'] } },
        policyServices: {
          extAuthz: { address: `127.0.0.1:${extAuthzPort}` },
          rateLimit: { address: `127.0.0.1:${rateLimitPort}`, failureMode: 'allow', perUserLimits },
        },
        services: { customer: { endpoints: [`127.0.0.1:${upstreamPort}`], healthCheck: '/health' } },
        limits: {
          authenticated: [{ per: 'user', limit: 1_000_000_000, window: '1m' }],
          unauthenticated: [{ per: 'ip', limit: 1_000_000_000, window: '1m' }],
        },
        routes: [{ match: `GET ${routePath}`, to: 'customer', rewrite: '/profile', require: ['read:own_profile'] }],
      }),
    );
    console.log(`starting the Sekisho stack ${name} (Envoy --concurrency 1, perUserLimits: ${perUserLimits})…`);
    const t0 = performance.now();
    const stack: Stack = await startStack({
      definitionFile,
      signingKey,
      envoyConcurrency: 1,
      logLevel: 'warn',
      runtime: settings.runtime,
    });
    started.push(stack);
    return { stack, upstreamPort, startupMs: Math.round(performance.now() - t0) };
  };
  const oneCall = await startSekisho('sekisho', 'ext-authz');
  const oneCallPids = new Set(descendantsOf(process.pid));
  const twoCalls = await startSekisho('sekisho-two-calls', 'rate-limit-service');
  const stack = oneCall.stack;
  const upstreamPort = oneCall.upstreamPort;
  const stackStartupMs = oneCall.startupMs;
  const token = await stack.mintToken('bench-user', { group });

  // The baselines' Envoy, with the dev key's JWKS inline.
  const runtime = await resolveEnvoyBinary();
  if (runtime.kind !== 'binary')
    throw new Error('bench:gateway needs an Envoy binary (not the Docker image) to pin it');
  const [adminPort, envoyOnlyPort, envoyNativePort] = [await freePort(), await freePort(), await freePort()];
  const jwks = await (await fetch(stack.keyServer.jwksUrl)).text();
  const bootstrapFile = join(dir, 'baseline.json');
  await writeFile(
    bootstrapFile,
    baselineBootstrap({
      adminPort,
      envoyOnlyPort,
      envoyNativePort,
      upstreamPort,
      path: routePath,
      rewrite: '/profile',
      projectId,
      jwks,
      groupClaim,
      group,
    }),
  );
  const baseline = spawnPinned('envoy-baseline', cores.server, runtime.path, [
    '-c',
    bootstrapFile,
    '--concurrency',
    '1',
    '--log-level',
    'warning',
    '--base-id',
    String(100 + (process.pid % 1000)),
  ]);
  started.push(baseline);
  await baseline.waitForHttp(`http://127.0.0.1:${adminPort}/ready`, 30_000, (p) => p.status === 200);

  // The stack's own processes (not this process's helpers: tsx's esbuild, devstack's watchdog shells).
  const pinned = descendantsOf(process.pid)
    .filter((pid) => pid !== baseline.pid)
    .map((pid) => ({ pid, name: gatewayProcessName(commandOf(pid)) }))
    .filter((p): p is { pid: number; name: string } => p.name !== undefined)
    .map((p) => ({ ...p, stack: oneCallPids.has(p.pid) ? 'sekisho' : 'sekisho-two-calls' }));
  for (const { pid } of pinned) pinProcess(pid, cores.server);
  const pinnedList = [baseline.pid, ...pinned.map((p) => p.pid)].map((pid) => `${pid} ${commandOf(pid)}`);
  console.log(`on core ${cores.server}:\n  ${pinnedList.join('\n  ')}`);

  const targets = {
    'envoy-only': { url: `http://127.0.0.1:${envoyOnlyPort}${routePath}` },
    'envoy-native': { url: `http://127.0.0.1:${envoyNativePort}${routePath}` },
    sekisho: { url: `${stack.httpUrl}${routePath}` },
    'sekisho-two-calls': { url: `${twoCalls.stack.httpUrl}${routePath}` },
  } as const;

  // Every case answers 200 before it is timed (a 401 or 403 would be fast and meaningless).
  for (const [name, target] of Object.entries(targets)) {
    const response = await fetch(target.url, { headers: { authorization: `Bearer ${token}` } });
    if (response.status !== 200)
      throw new Error(`${name}: expected 200, got ${response.status}: ${await response.text()}`);
    const unauthenticated = await fetch(target.url);
    if (name !== 'envoy-only' && unauthenticated.status < 400) {
      throw new Error(`${name}: a request without a token got ${unauthenticated.status}`);
    }
  }

  // RSS per process of the case's gateway (for sekisho: Envoy, each service, Redis).
  const rssOf = (name: keyof typeof targets): Record<string, number> =>
    name === 'sekisho' || name === 'sekisho-two-calls'
      ? Object.fromEntries(pinned.filter((p) => p.stack === name).map((p) => [p.name, rssMb(p.pid)]))
      : { envoy: rssMb(baseline.pid) };
  const idle = Object.fromEntries(
    (Object.keys(targets) as Array<keyof typeof targets>).map((name) => [name, rssOf(name)]),
  ) as Record<keyof typeof targets, Record<string, number>>;

  const run = async (
    name: keyof typeof targets,
    concurrency: number,
    extra: Partial<LoadOptions> = {},
    round?: number,
  ) => {
    const peak = rssOf(name);
    const sampler = setInterval(() => {
      for (const [key, value] of Object.entries(rssOf(name))) peak[key] = Math.max(peak[key] ?? 0, value);
    }, 250);
    const result = await runH2load({
      url: targets[name].url,
      h1: true,
      connections: concurrency,
      concurrency,
      durationS: settings.durationS,
      warmupS: settings.warmupS,
      headers: { authorization: `Bearer ${token}` },
      cores: cores.loadGenerator,
      ...extra,
    }).finally(() => clearInterval(sampler));
    const row: Row = {
      case: extra.ratePerConnection
        ? `${name}@${extra.ratePerConnection * concurrency}/s`
        : round !== undefined
          ? `${name}#${round}`
          : name,
      concurrency,
      ...(round !== undefined ? { saturation_round: round } : {}),
      ...result,
      rss_idle_mb: idle[name],
      rss_load_mb: peak,
      server_cores: cores.server,
      load_generator_cores: cores.loadGenerator,
      ...(extra.ratePerConnection ? { offered_per_s: extra.ratePerConnection * concurrency } : {}),
    };
    printRow(row);
    results.push(row);
    return row;
  };

  printHeader();
  const byCase: Record<string, Record<number, Row>> = {};
  for (const name of Object.keys(targets) as Array<keyof typeof targets>) {
    byCase[name] = {};
    for (const c of settings.concurrencies) (byCase[name] as Record<number, Row>)[c] = await run(name, c);
  }
  // Saturation: the best of the concurrencies (on a shared machine one level can be unlucky).
  const saturated = Math.max(...settings.concurrencies);
  const peakOf = (name: string) => Math.max(...Object.values(byCase[name] ?? {}).map((r) => r.throughput_per_s));
  const sekishoPeak = peakOf('sekisho');
  // A fixed moderate load: half of what the Sekisho stack sustains, over 16 connections.
  const perConnection = Math.max(1, Math.floor(sekishoPeak / 2 / 16));
  const moderate: Record<string, Row> = {};
  for (const name of Object.keys(targets) as Array<keyof typeof targets>) {
    moderate[name] = await run(name, 16, { ratePerConnection: perConnection });
  }

  // Saturation again, in rounds that alternate the cases (native, one call, two calls, native,
  // …), so that a slow spell of this shared machine falls on all of them alike: each round's
  // ratio is read within the round, and the median of the rounds (the first pass above being
  // round 0) is what is compared with the target.
  const saturationCases = ['envoy-native', 'sekisho', 'sekisho-two-calls'] as const;
  const saturationLevels = settings.concurrencies.filter((c) => c > 1);
  const rounds: Array<Record<(typeof saturationCases)[number], number>> = [
    {
      'envoy-native': peakOf('envoy-native'),
      sekisho: sekishoPeak,
      'sekisho-two-calls': peakOf('sekisho-two-calls'),
    },
  ];
  for (let round = 1; round <= settings.saturationRounds; round++) {
    const peaks = { 'envoy-native': 0, sekisho: 0, 'sekisho-two-calls': 0 };
    for (const name of saturationCases) {
      for (const c of saturationLevels) {
        const row = await run(name, c, {}, round);
        peaks[name] = Math.max(peaks[name], row.throughput_per_s);
      }
    }
    rounds.push(peaks);
  }
  const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
  const medianOf = (values: number[]) => Math.round(median(values) * 1000) / 1000;
  const perRound = rounds.map((r) => ({
    ...r,
    sekisho_over_native: ratio(r.sekisho, r['envoy-native']),
    'sekisho-two-calls_over_native': ratio(r['sekisho-two-calls'], r['envoy-native']),
  }));

  const added = (base: Row | undefined, row: Row | undefined) =>
    base && row
      ? {
          added_p50_ms: Math.round((row.p50_ms - base.p50_ms) * 1000) / 1000,
          added_p99_ms: Math.round((row.p99_ms - base.p99_ms) * 1000) / 1000,
        }
      : undefined;
  const comparison = {
    targets: { added_p50_ms: 0.5, added_p99_ms: 2, at: 'one request at a time' },
    one_at_a_time: {
      'envoy-native': added(byCase['envoy-only']?.[1], byCase['envoy-native']?.[1]),
      sekisho: added(byCase['envoy-only']?.[1], byCase.sekisho?.[1]),
      'sekisho-two-calls': added(byCase['envoy-only']?.[1], byCase['sekisho-two-calls']?.[1]),
    },
    moderate_load: {
      offered_per_s: perConnection * 16,
      'envoy-native': added(moderate['envoy-only'], moderate['envoy-native']),
      sekisho: added(moderate['envoy-only'], moderate.sekisho),
      'sekisho-two-calls': added(moderate['envoy-only'], moderate['sekisho-two-calls']),
    },
    saturation: {
      peak_over_concurrencies: settings.concurrencies,
      highest_concurrency: saturated,
      'envoy-only_per_s': peakOf('envoy-only'),
      'envoy-native_per_s': peakOf('envoy-native'),
      sekisho_per_s: sekishoPeak,
      sekisho_over_native: ratio(sekishoPeak, peakOf('envoy-native')),
      'sekisho-two-calls_per_s': peakOf('sekisho-two-calls'),
      'sekisho-two-calls_over_native': ratio(peakOf('sekisho-two-calls'), peakOf('envoy-native')),
      rounds: perRound,
      median_sekisho_over_native: medianOf(perRound.map((r) => r.sekisho_over_native)),
      'median_sekisho-two-calls_over_native': medianOf(perRound.map((r) => r['sekisho-two-calls_over_native'])),
      target_sekisho_over_native: 0.5,
    },
  };
  console.log(`\n${JSON.stringify(comparison, null, 2)}`);
  const file = await writeResults('gateway', results, {
    load: 'h2load --h1, concurrency = connections, one request in flight on each',
    server_core: `${cores.server}: both Envoys (--concurrency 1), and for sekisho ext-authz, ratelimit-service, the control plane and Redis`,
    load_generator_core: `${cores.loadGenerator}: h2load, and this process (the demo upstream and the key server)`,
    pinned: pinnedList,
    sekisho_stack_startup_ms: stackStartupMs,
    sekisho_two_calls_stack_startup_ms: twoCalls.startupMs,
    cases: {
      sekisho: 'perUserLimits: ext-authz (the per-user limits counted in the Check: one gRPC call per request)',
      'sekisho-two-calls': 'perUserLimits: rate-limit-service (the default: ext_authz, then ratelimit after it)',
    },
    services_run_under: runtimeNote(),
    duration_s: settings.durationS,
    warmup_s: settings.warmupS,
    comparison,
  });
  console.log(`\nwrote ${file}`);
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
