import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { bundleEntry } from '@sekisho/devstack/build';
import { createFirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort } from '@sekisho/devstack/processes';
import {
  AuthorizationClient,
  CheckRequest,
  type CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import {
  assertTwoCores,
  cores,
  loadAtConcurrencies,
  printHeader,
  profilesDir,
  type Row,
  type RunSettings,
  spawnPinned,
} from './common';
import { printProfiles } from './cpu-profile';
import { grpcBodyFile, grpcHeaders } from './grpc-call';
import { findH2load } from './h2load';
import { startExtAuthzService } from './services';

// npx tsx bench/src/h2-transport-compare.ts [rounds] [--cpu-prof]   (after `npm run build`)
// Side by side, in one machine state: the bare node:http2 no-op, the same no-op on service-kit's
// gRPC transport, and ext-authz with a warm token cache, each at 16 and 64 streams on one
// connection, in interleaved rounds; prints per case the median peak and calls per busy core,
// and the median of each round's ratio to noop-http2 (a round's cases ran in about the same
// machine state; calls per busy core, the server's own CPU, move least when other processes
// take the core). A shorter look than bench:authz, for comparing two builds of the transport on
// a noisy machine.
// The no-op servers are bundled into this checkout's dist/ (not the shared .cache), so two
// checkouts run side by side each measure their own code.

const args = process.argv.slice(2);
const cpuProfile = args.includes('--cpu-prof');
const rounds = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
const benchStart = Date.now();
assertTwoCores();
findH2load();
const settings: RunSettings = {
  quick: false,
  cpuProfile,
  runtime: 'dist',
  durationS: 3,
  warmupS: 1,
  concurrencies: [16, 64],
  saturationRounds: 0,
};

const projectId = 'sekisho-bench';
const policy = AuthzPolicy.fromPartial({
  firebase: { projectId },
  groupClaim: 'tier',
  defaultGroup: 'customer',
  groups: { customer: { permissions: ['read:own_profile'] } },
});
const keys = await createFirebaseKeyServer();
const token = await mintIdToken(keys.signingKey, { projectId, uid: 'bench-user', expiresIn: 3600 });
const request = CheckRequest.fromPartial({
  attributes: {
    source: { address: { socketAddress: { address: '203.0.113.7', portValue: 40000 } } },
    contextExtensions: { [authzContextKeys.routeId]: 'profile', [authzContextKeys.permissions]: 'read:own_profile' },
    request: {
      http: {
        method: 'GET',
        path: '/api/v1/customer/profile',
        host: 'api.example.com',
        headers: { 'x-request-id': 'bench', authorization: `Bearer ${token}` },
      },
    },
  },
});
const noopBundle = join(repoRoot, 'dist', 'bench', 'noop-server-main.mjs');
await bundleEntry('bench/src/noop-server-main.ts', noopBundle);

const bodyFile = await grpcBodyFile('authz-valid', CheckRequest.encode(request).finish());
const loadFor = (port: number) => ({
  url: `http://127.0.0.1:${port}/envoy.service.auth.v3.Authorization/Check`,
  bodyFile,
  headers: grpcHeaders,
});

async function expectOk(port: number) {
  const client = new AuthorizationClient(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    const response = await new Promise<CheckResponse>((resolve, reject) =>
      client.check(request, (error, r) => (error ? reject(error) : resolve(r))),
    );
    if (response.status?.code !== 0) throw new Error(`port ${port}: the Check was not allowed`);
  } finally {
    client.close();
  }
}

type Case = 'noop-http2' | 'noop-service-kit' | 'cached';
interface Best {
  peak: number;
  perBusyCore: number;
}
const best: Record<Case, Best[]> = { 'noop-http2': [], 'noop-service-kit': [], cached: [] };
const bestOf = (rows: Row[]): Best => ({
  peak: Math.max(...rows.map((r) => r.throughput_per_s)),
  perBusyCore: Math.max(...rows.map((r) => Number(r.calls_per_busy_core_s ?? 0))),
});

try {
  printHeader();
  for (let round = 0; round < rounds; round++) {
    for (const transport of ['http2', 'service-kit'] as const) {
      const port = await freePort();
      const name = `noop-${transport}` as const;
      const profile = cpuProfile
        ? ['--cpu-prof', `--cpu-prof-dir=${profilesDir}`, `--cpu-prof-name=${name}.${Date.now()}.cpuprofile`]
        : [];
      const proc = spawnPinned(name, cores.server, process.execPath, [
        ...profile,
        noopBundle,
        'authz',
        transport,
        String(port),
      ]);
      try {
        await proc.waitForPort(port, 30_000);
        await expectOk(port);
        best[name].push(bestOf(await loadAtConcurrencies(name, proc, settings, loadFor(port))));
      } finally {
        await proc.stop();
      }
    }
    const service = await startExtAuthzService(keys.url, policy, {
      cpuProfile,
      env: { EXT_AUTHZ_TOKEN_CACHE_SIZE: '10000' },
    });
    try {
      await expectOk(service.port);
      best.cached.push(bestOf(await loadAtConcurrencies('cached', service.proc, settings, loadFor(service.port))));
    } finally {
      await service.stop();
    }
  }
} finally {
  await keys.close();
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};
const round2 = (x: number) => Math.round(x * 100) / 100;
const summary = Object.fromEntries(
  (Object.keys(best) as Case[]).map((c) => {
    const runs = best[c];
    const base = best['noop-http2'];
    return [
      c,
      {
        peaks_per_s: runs.map((r) => r.peak),
        median_peak_per_s: median(runs.map((r) => r.peak)),
        median_calls_per_busy_core_s: median(runs.map((r) => r.perBusyCore)),
        peak_ratio_to_noop_http2: round2(median(runs.map((r, i) => r.peak / (base[i] as Best).peak))),
        per_busy_core_ratio_to_noop_http2: round2(
          median(runs.map((r, i) => r.perBusyCore / (base[i] as Best).perBusyCore)),
        ),
      },
    ];
  }),
);
console.log(`\n${JSON.stringify(summary, null, 2)}`);
if (cpuProfile) await printProfiles(profilesDir, benchStart, 20);
