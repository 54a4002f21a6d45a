import { rm } from 'node:fs/promises';
import { credentials } from '@grpc/grpc-js';
import { createFirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { freePort, type ManagedProcess } from '@sekisho/devstack/processes';
import {
  AuthorizationClient,
  CheckRequest,
  type CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { transportFromEnv } from '@sekisho/service-kit/grpc-server';
import {
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
  twoWorkerPlacement,
  writeResults,
} from './common';
import { printProfiles } from './cpu-profile';
import { benchAuthzPolicy, benchCheckRequest, benchProjectId } from './fixtures';
import { grpcBodyFile, grpcHeaders } from './grpc-call';
import { findH2load } from './h2load';
import type { NoopTransport } from './noop-servers';
import { startExtAuthzService } from './services';

// npm run bench:authz [-- --quick]
// ext_authz Check at 1, 16 and 64 calls in flight on one HTTP/2 connection: the transport
// ceilings (no-op servers), then the real ext-authz process with its policy over ADS and
// RS256 Firebase ID tokens whose keys it fetches from devstack's key server.

const settings = runSettings();
const benchStart = Date.now();
assertTwoCores();
findH2load();

const keys = await createFirebaseKeyServer();
const token = await mintIdToken(keys.signingKey, {
  projectId: benchProjectId,
  uid: 'bench-user',
  email: 'bench@example.com',
  expiresIn: 3600,
});
// A well-formed token whose signature does not verify: what an attacker replays.
const forged = `${token.slice(0, token.lastIndexOf('.') + 1)}${'A'.repeat(token.length - token.lastIndexOf('.') - 1)}`;

const bodies = {
  valid: await grpcBodyFile('authz-valid', CheckRequest.encode(benchCheckRequest(token)).finish()),
  forged: await grpcBodyFile('authz-forged', CheckRequest.encode(benchCheckRequest(forged)).finish()),
};
const loadFor = (port: number, body: keyof typeof bodies) => ({
  url: `http://127.0.0.1:${port}/envoy.service.auth.v3.Authorization/Check`,
  bodyFile: bodies[body],
  headers: grpcHeaders,
});

/** One Check through grpc-js (h2load cannot see grpc-status or the decision): the case is checked first. */
async function expectDecision(port: number, bearer: string, httpStatus: 'ok' | 401) {
  const client = new AuthorizationClient(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    const response = await new Promise<CheckResponse>((resolve, reject) =>
      client.check(benchCheckRequest(bearer), (error, r) => (error ? reject(error) : resolve(r))),
    );
    const got = response.status?.code === 0 ? 'ok' : response.deniedResponse?.status?.code;
    if (got !== httpStatus) throw new Error(`port ${port}: expected ${httpStatus}, got ${got ?? 'nothing'}`);
  } finally {
    client.close();
  }
}

const started: Array<{ stop(): Promise<void> }> = [{ stop: () => keys.close() }];
const results: Row[] = [];
const startupMs: Record<string, number> = {};
const peak = (rows: Row[]) => Math.max(...rows.map((r) => r.throughput_per_s));

/** The same server at half its peak over 16 streams: where the p99 target applies. */
async function atHalfPeak(name: string, server: { proc: ManagedProcess; port: number }, rows: Row[], body: 'valid') {
  const rate = Math.floor(peak(rows) / 2);
  const [row] = await loadAtConcurrencies(
    `${name}@${rate}/s`,
    server.proc,
    { ...settings, concurrencies: [16] },
    { ...loadFor(server.port, body), ratePerConnection: rate },
    () => ({ offered_per_s: rate, base_case: name }),
  );
  results.push(row as Row);
  return row as Row;
}

async function startNoop(transport: NoopTransport) {
  const port = await freePort();
  const proc = await spawnNodePinned(
    `noop-${transport}`,
    cores.server,
    'bench/src/noop-server-main.ts',
    ['authz', transport, String(port)],
    undefined,
    settings.cpuProfile,
  );
  started.push(proc);
  await proc.waitForPort(port, 30_000);
  recordIdleRss(proc.pid);
  return { proc, port };
}

async function startExtAuthz(tokenCacheSize: number): Promise<{ proc: ManagedProcess; port: number }> {
  const service = await startExtAuthzService(keys.url, benchAuthzPolicy, {
    cpuProfile: settings.cpuProfile,
    env: { EXT_AUTHZ_TOKEN_CACHE_SIZE: String(tokenCacheSize) },
  });
  started.push(service);
  startupMs[tokenCacheSize > 0 ? 'ext-authz' : 'ext-authz (cache off)'] = service.startupMs;
  recordIdleRss(service.proc.pid);
  return service;
}

try {
  printHeader();
  for (const transport of ['grpc-js', 'http2', 'service-kit'] as const) {
    const noop = await startNoop(transport);
    await expectDecision(noop.port, token, 'ok');
    results.push(...(await loadAtConcurrencies(`noop-${transport}`, noop.proc, settings, loadFor(noop.port, 'valid'))));
    await noop.proc.stop();
  }

  const cached = await startExtAuthz(10_000);
  await expectDecision(cached.port, token, 'ok');
  await expectDecision(cached.port, forged, 401);
  const cachedRows = await loadAtConcurrencies('cached', cached.proc, settings, loadFor(cached.port, 'valid'));
  results.push(...cachedRows);
  const cachedHalf = await atHalfPeak('cached', cached, cachedRows, 'valid');
  results.push(...(await loadAtConcurrencies('denied', cached.proc, settings, loadFor(cached.port, 'forged'))));
  await cached.proc.stop();

  // Two workers sharing the port (SEKISHO_WORKERS=2), two h2load connections, cache on; not
  // under --cpu-prof (the workers would inherit the flag and write over each other's profile).
  const placement = twoWorkerPlacement();
  const two = await startExtAuthzService(keys.url, benchAuthzPolicy, {
    name: 'ext-authz-2-workers',
    workers: 2,
    serverCores: placement.serverCores,
    env: { EXT_AUTHZ_TOKEN_CACHE_SIZE: '10000' },
  });
  started.push(two);
  startupMs['ext-authz (2 workers)'] = two.startupMs;
  recordIdleRss(two.proc.pid);
  await expectDecision(two.port, token, 'ok');
  const twoRows = await loadAtConcurrencies(
    '2-workers-cached',
    two.proc,
    settings,
    { ...loadFor(two.port, 'valid'), connections: 2 },
    () => ({ workers: 2, connections: 2 }),
    placement,
  );
  results.push(...twoRows);
  await two.stop();
  const best = (rows: Row[]) => rows.reduce((a, b) => (b.throughput_per_s > a.throughput_per_s ? b : a));
  const twoWorkers = {
    placement: placement.note,
    one_process_peak_per_s: best(cachedRows).throughput_per_s,
    two_workers_peak_per_s: best(twoRows).throughput_per_s,
    scaling: Math.round((best(twoRows).throughput_per_s / best(cachedRows).throughput_per_s) * 100) / 100,
    one_process_calls_per_busy_core_s: best(cachedRows).calls_per_busy_core_s,
    two_workers_calls_per_busy_core_s: best(twoRows).calls_per_busy_core_s,
    two_workers_busy_cores: best(twoRows).server_busy_cores,
  };
  console.log(`\n${JSON.stringify(twoWorkers, null, 2)}`);

  const uncached = await startExtAuthz(0);
  await expectDecision(uncached.port, token, 'ok');
  const uncachedRows = await loadAtConcurrencies('uncached', uncached.proc, settings, loadFor(uncached.port, 'valid'));
  results.push(...uncachedRows);
  const uncachedHalf = await atHalfPeak('uncached', uncached, uncachedRows, 'valid');

  const noopHttp2 = peak(results.filter((r) => r.case === 'noop-http2'));
  const ratio = (rows: Row[]) => Math.round((peak(rows) / noopHttp2) * 100) / 100;
  const comparison = {
    'noop-http2_peak_per_s': noopHttp2,
    cached: {
      peak_per_s: peak(cachedRows),
      ratio: ratio(cachedRows),
      target_ratio: 0.6,
      p99_ms_at_half_peak: cachedHalf.p99_ms,
    },
    uncached: {
      peak_per_s: peak(uncachedRows),
      ratio: ratio(uncachedRows),
      target_ratio: 0.4,
      p99_ms_at_half_peak: uncachedHalf.p99_ms,
    },
    target_p99_ms_at_half_peak: 2,
  };
  console.log(`\n${JSON.stringify(comparison, null, 2)}`);

  const file = await writeResults('authz', results, {
    load: 'h2load, one HTTP/2 connection, concurrency = streams in flight on it',
    server_core: cores.server,
    load_generator_core: cores.loadGenerator,
    services_run_under: runtimeNote(),
    // The services inherit this process's environment: SEKISHO_GRPC_TRANSPORT=grpc-js compares.
    services_grpc_transport: transportFromEnv(),
    cached: 'one verified RS256 token repeated; EXT_AUTHZ_TOKEN_CACHE_SIZE=10000',
    uncached: 'the same token with EXT_AUTHZ_TOKEN_CACHE_SIZE=0: a signature verification per call',
    denied: 'a token with a forged signature (401 INVALID_TOKEN), cache on',
    duration_s: settings.durationS,
    warmup_s: settings.warmupS,
    startup_ms: startupMs,
    comparison,
    two_workers: twoWorkers,
  });
  console.log(`\nwrote ${file}`);
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => {});
  if (settings.cpuProfile) {
    await printProfiles(profilesDir, benchStart);
    console.log(`\nCPU profiles (open in Chrome DevTools): ${profilesDir}`);
  }
  for (const body of Object.values(bodies)) await rm(body, { force: true });
}
