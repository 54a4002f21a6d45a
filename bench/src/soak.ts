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
import { assertTwoCores, cores, type Row, rssMb, runSettings, runtimeNote, writeResults } from './common';
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
import { flatness, type RssSample } from './stats';

// npm run bench:soak [-- --duration <seconds>] [--service ratelimit|authz] [--tsx] [--node-flags "<flags>"]
// Each policy service (compiled, as production runs it) is loaded at half of its peak for
// `--duration` seconds (600 by default, each service in turn), its RSS sampled every second.
// Flat means every sample after the first tenth of the run lies within ±10 % of their median.

interface SoakArgs {
  durationS: number;
  services: Array<'ratelimit' | 'authz'>;
  /** Instead of production's flags (devstack's productionNodeFlags) when given. */
  nodeFlags: string[] | undefined;
  passOn: string[];
}

function soakArgs(argv: string[]): SoakArgs {
  const out: SoakArgs = { durationS: 600, services: ['ratelimit', 'authz'], nodeFlags: undefined, passOn: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--duration') {
      out.durationS = Number(value());
      if (!Number.isFinite(out.durationS) || out.durationS < 10) {
        throw new Error(`--duration: expected seconds ≥ 10, got "${argv[i]}"`);
      }
    } else if (arg === '--service') {
      const v = value();
      if (v !== 'ratelimit' && v !== 'authz') throw new Error(`--service: expected ratelimit or authz, got "${v}"`);
      out.services = [v];
    } else if (arg === '--node-flags') {
      // Space-separated; "" runs with V8's defaults.
      out.nodeFlags = value().split(' ').filter(Boolean);
    } else if (arg === '--tsx' || arg === '--cpu-prof') {
      out.passOn.push(arg);
    } else {
      throw new Error(`unknown argument "${arg}" (accepted: --duration, --service, --node-flags, --tsx, --cpu-prof)`);
    }
  }
  return out;
}

const args = soakArgs(process.argv.slice(2));
const settings = runSettings(args.passOn);
assertTwoCores();
findH2load();

const started: Array<{ stop(): Promise<void> }> = [];
const results: Row[] = [];
const summaries: Record<string, unknown> = {};

async function soak(name: string, service: StartedService, bodyFile: string, url: string) {
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  const rssIdle = rssMb(service.proc.pid);
  const peakRun = await runH2load({
    url,
    bodyFile,
    headers: grpcHeaders,
    concurrency: 64,
    durationS: 3,
    warmupS: 1,
    cores: cores.loadGenerator,
  });
  const rate = Math.floor(peakRun.throughput_per_s / 2);
  console.log(`${name}: startup ${service.startupMs} ms, idle ${rssIdle} MB, peak ${peakRun.throughput_per_s}/s`);
  console.log(`${name}: ${args.durationS} s at ${rate}/s (16 in flight)`);

  const samples: RssSample[] = [];
  const t0 = performance.now();
  const sampler = setInterval(() => {
    samples.push({ t_s: Math.round((performance.now() - t0) / 100) / 10, rss_mb: rssMb(service.proc.pid) });
  }, 1_000);
  const segmentS = Math.min(60, Math.max(5, Math.floor(args.durationS / 10)));
  const segments: Row[] = [];
  try {
    for (let done = 0; done < args.durationS; done += segmentS) {
      const durationS = Math.min(segmentS, args.durationS - done);
      const result = await runH2load({
        url,
        bodyFile,
        headers: grpcHeaders,
        concurrency: 16,
        ratePerConnection: rate,
        durationS,
        warmupS: 0,
        cores: cores.loadGenerator,
      });
      const row: Row = {
        case: `${name}@${rate}/s`,
        concurrency: 16,
        segment_start_s: done,
        ...result,
        rss_mb: rssMb(service.proc.pid),
        offered_per_s: rate,
      };
      segments.push(row);
      console.log(
        `  t=${String(done + durationS).padStart(4)} s  ${String(result.throughput_per_s).padStart(6)}/s  p99 ${result.p99_ms} ms  RSS ${row.rss_mb} MB`,
      );
    }
  } finally {
    clearInterval(sampler);
  }
  results.push(...segments);
  const flat = flatness(samples, args.durationS);
  summaries[name] = {
    startup_ms: service.startupMs,
    rss_idle_mb: rssIdle,
    rss_load_max_mb: flat.max_mb,
    peak_per_s: peakRun.throughput_per_s,
    offered_per_s: rate,
    ...flat,
    failed: segments.reduce((n, r) => n + Number(r.failed), 0),
    // h2load's status counts may include a call its request total left out (negative differences).
    non_2xx: segments.reduce((n, r) => n + Math.max(0, Number(r.non_2xx)), 0),
    rss_samples: samples,
  };
  console.log(
    `${name}: RSS median ${flat.median_mb} MB, ±${flat.max_deviation_pct} % → ${flat.flat ? 'flat' : 'NOT flat'}`,
  );
}

try {
  if (args.services.includes('ratelimit')) {
    const redis = await startPinnedRedis();
    started.push(redis);
    const policy = benchRateLimitPolicy('soak');
    const request = benchRateLimitRequest('soak', 'soak-user');
    const service = await startRateLimitService(redis.url, policy, {
      cpuProfile: settings.cpuProfile,
      nodeFlags: args.nodeFlags,
    });
    started.push(service);
    const client = new RateLimitServiceClient(`127.0.0.1:${service.port}`, credentials.createInsecure());
    const response = await new Promise<RateLimitResponse>((resolve, reject) =>
      client.shouldRateLimit(request, (error, r) => (error ? reject(error) : resolve(r))),
    );
    client.close();
    if (response.overallCode !== RateLimitResponse_Code.OK) throw new Error('ratelimit-service: expected OK');
    await soak(
      'ratelimit-service',
      service,
      await grpcBodyFile('soak-rl', RateLimitRequest.encode(request).finish()),
      `http://127.0.0.1:${service.port}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`,
    );
    await service.stop();
  }
  if (args.services.includes('authz')) {
    const keys = await createFirebaseKeyServer();
    started.push({ stop: () => keys.close() });
    const token = await mintIdToken(keys.signingKey, { projectId: benchProjectId, uid: 'soak-user', expiresIn: 3600 });
    const policy = benchAuthzPolicy;
    const request = benchCheckRequest(token, 'soak');
    const service = await startExtAuthzService(keys.url, policy, {
      cpuProfile: settings.cpuProfile,
      nodeFlags: args.nodeFlags,
    });
    started.push(service);
    const client = new AuthorizationClient(`127.0.0.1:${service.port}`, credentials.createInsecure());
    const response = await new Promise<CheckResponse>((resolve, reject) =>
      client.check(request, (error, r) => (error ? reject(error) : resolve(r))),
    );
    client.close();
    if (response.status?.code !== 0) throw new Error('ext-authz: expected OK for a valid token');
    await soak(
      'ext-authz',
      service,
      await grpcBodyFile('soak-authz', CheckRequest.encode(request).finish()),
      `http://127.0.0.1:${service.port}/envoy.service.auth.v3.Authorization/Check`,
    );
  }
  const file = await writeResults('soak', results, {
    load: 'h2load, one HTTP/2 connection, 16 streams in flight, at half of a 64-in-flight peak',
    server_core: cores.server,
    load_generator_core: cores.loadGenerator,
    services_run_under: runtimeNote(),
    node_flags: args.nodeFlags ?? productionNodeFlags,
    node_env: args.nodeFlags ? {} : productionNodeEnv,
    duration_s: args.durationS,
    flat_means: 'every RSS sample after the first tenth of the run within ±10 % of their median',
    services: summaries,
  });
  console.log(`\nwrote ${file}`);
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => {});
}
