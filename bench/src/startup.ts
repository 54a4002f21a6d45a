import { join } from 'node:path';
import { createFirebaseKeyServer } from '@sekisho/devstack/firebase-keys';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort } from '@sekisho/devstack/processes';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { cores, type Runtime, rssMb, runSettings, spawnNodePinned, writeResults } from './common';
import { startPinnedRedis } from './redis-bench';
import { startExtAuthzService, startRateLimitService } from './services';

// npm run bench:startup [-- --rounds <n>]
// Each of Sekisho's three processes started the two ways side by side, in alternation:
// `tsx` (node --import tsx on the sources) and `dist` (plain node on `npm run build`'s
// bundle, with production's V8 flags). Time from spawn to ready (/readyz 200: the policy
// held, Redis reached, the control plane's snapshot built) and RSS once ready and after 3 s idle.

const argv = process.argv.slice(2);
const roundsAt = argv.indexOf('--rounds');
const rounds = roundsAt >= 0 ? Number(argv[roundsAt + 1]) : 3;
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) {
  throw new Error(`--rounds: expected a whole number from 1 to 20, got "${argv[roundsAt + 1]}"`);
}
runSettings([]);

interface Sample {
  service: string;
  runtime: Runtime;
  startup_ms: number;
  rss_ready_mb: number;
  rss_idle_mb: number;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 3_000));
const samples: Sample[] = [];
const redis = await startPinnedRedis();
const keys = await createFirebaseKeyServer();
const rlPolicy = RateLimitPolicy.fromPartial({ domain: rateLimitDomain, rules: [] });
const authzPolicy = AuthzPolicy.fromPartial({
  firebase: { projectId: 'sekisho-bench' },
  groupClaim: 'tier',
  defaultGroup: 'customer',
  groups: { customer: { permissions: ['read:own_profile'] } },
});

async function controlPlane(runtime: Runtime): Promise<Sample> {
  const [xds, admin] = [await freePort(), await freePort()];
  const t0 = performance.now();
  const proc = await spawnNodePinned(
    'control-plane',
    cores.server,
    'control-plane/src/main.ts',
    [],
    {
      ...process.env,
      LOG_LEVEL: 'warn',
      CONTROL_PLANE_DEFINITION: join(repoRoot, 'control-plane/examples/salon.gateway.yaml'),
      CONTROL_PLANE_XDS_PORT: String(xds),
      CONTROL_PLANE_ADMIN_PORT: String(admin),
    },
    false,
    undefined,
    runtime,
  );
  try {
    await proc.waitForHttp(`http://127.0.0.1:${admin}/readyz`, 60_000, (p) => p.status === 200);
    const startup = Math.round(performance.now() - t0);
    const ready = rssMb(proc.pid);
    await settle();
    return {
      service: 'control-plane',
      runtime,
      startup_ms: startup,
      rss_ready_mb: ready,
      rss_idle_mb: rssMb(proc.pid),
    };
  } finally {
    await proc.stop();
  }
}

async function policyService(name: 'ext-authz' | 'ratelimit-service', runtime: Runtime): Promise<Sample> {
  const service =
    name === 'ext-authz'
      ? await startExtAuthzService(keys.url, authzPolicy, { runtime })
      : await startRateLimitService(redis.url, rlPolicy, { runtime });
  try {
    const ready = rssMb(service.proc.pid);
    await settle();
    return {
      service: name,
      runtime,
      startup_ms: service.startupMs,
      rss_ready_mb: ready,
      rss_idle_mb: rssMb(service.proc.pid),
    };
  } finally {
    await service.stop();
  }
}

try {
  for (let round = 0; round < rounds; round++) {
    for (const runtime of ['tsx', 'dist'] as const) {
      for (const sample of [
        await controlPlane(runtime),
        await policyService('ext-authz', runtime),
        await policyService('ratelimit-service', runtime),
      ]) {
        samples.push(sample);
        console.log(
          `${sample.service.padEnd(18)} ${runtime.padEnd(5)} ready in ${String(sample.startup_ms).padStart(5)} ms, RSS ${sample.rss_ready_mb} MB ready, ${sample.rss_idle_mb} MB idle`,
        );
      }
    }
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
  const summary: Record<string, unknown> = {};
  for (const service of ['control-plane', 'ext-authz', 'ratelimit-service']) {
    for (const runtime of ['tsx', 'dist'] as const) {
      const mine = samples.filter((s) => s.service === service && s.runtime === runtime);
      summary[`${service} ${runtime}`] = {
        startup_ms_median: median(mine.map((s) => s.startup_ms)),
        rss_idle_mb_median: median(mine.map((s) => s.rss_idle_mb)),
      };
    }
  }
  console.log(`\n${JSON.stringify(summary, null, 2)}`);
  const file = await writeResults('startup', [], {
    rounds,
    server_core: cores.server,
    runtimes: {
      tsx: 'node --import tsx <service>/src/main.ts',
      dist: 'node <productionNodeFlags> dist/<service>/main.js (npm run build)',
    },
    control_plane_definition: 'control-plane/examples/salon.gateway.yaml',
    samples,
    summary,
  });
  console.log(`wrote ${file}`);
} finally {
  await keys.close();
  await redis.stop();
}
