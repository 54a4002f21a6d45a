// npx tsx bench/src/authz-check-path.ts --baseline <another checkout> [--quick] [--case cached|uncached|denied]
//
// ext-authz's own work per Check, without the transport: protobuf bytes in, protobuf bytes
// out (request decode, the Check handler with the real key store, verifier, token cache,
// policy, metrics and logger, response encode), for this tree and for another checkout of the
// repository (a git worktree of the commit to compare with) side by side in one process, in
// alternating rounds. The
// cases are bench:authz's: `cached` (one valid token, cache on), `uncached` (cache off) and
// `denied` (a forged signature). Each tree runs its own code end to end (its decoder or the
// generated one, its verifier, its response building); only the request bytes are shared.
// CPU time is process.cpuUsage() (every thread: a threadpool hop counts). `--case <name>`: one case.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createFirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { benchAuthzPolicy, benchCheckRequest, benchProjectId } from './fixtures';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const baselineAt = args.indexOf('--baseline');
if (baselineAt < 0 || args[baselineAt + 1] === undefined) {
  console.error('usage: npx tsx bench/src/authz-check-path.ts --baseline <another checkout, with node_modules>');
  process.exit(2);
}
const trees = {
  baseline: resolve(args[baselineAt + 1] as string),
  this: resolve(import.meta.dirname, '..', '..'),
};
const rounds = quick ? 3 : 5;
// --case cached|uncached|denied: only that one (e.g. under --cpu-prof).
const caseAt = args.indexOf('--case');
const onlyCase = caseAt >= 0 ? args[caseAt + 1] : undefined;
const iterations = { cached: quick ? 20_000 : 60_000, uncached: quick ? 1_500 : 4_000, denied: quick ? 1_500 : 4_000 };

const keys = await createFirebaseKeyServer();
const token = await mintIdToken(keys.signingKey, {
  projectId: benchProjectId,
  uid: 'bench-user',
  email: 'bench@example.com',
});
const forged = `${token.slice(0, token.lastIndexOf('.') + 1)}${'A'.repeat(token.length - token.lastIndexOf('.') - 1)}`;
const requestBytes = (bearer: string) => Buffer.from(CheckRequest.encode(benchCheckRequest(bearer)).finish());
const bodies = { valid: requestBytes(token), forged: requestBytes(forged) };

type Call = (bytes: Buffer) => unknown;

/** One tree's Check path, wired as its app.ts wires it (policy applied, keys loaded). */
async function checkPath(root: string, tokenCacheSize: number): Promise<Call> {
  const load = (path: string) => import(pathToFileURL(`${root}/${path}`).href);
  const service = await load('ext-authz/src/check-service.ts');
  const { FirebaseKeyStore } = await load('ext-authz/src/firebase/key-store.ts');
  const { VerifiedTokenCache, verifyFirebaseIdToken } = await load('ext-authz/src/firebase/verify.ts');
  const { compileAuthzPolicy } = await load('ext-authz/src/policy.ts');
  const { createExtAuthzMetrics } = await load('ext-authz/src/metrics.ts');
  const { DenialLogLimiter } = await load('ext-authz/src/denial-log-limiter.ts');
  const { createLogger } = await load('service-kit/src/logger.ts');
  const { createMetricsRegistry } = await load('service-kit/src/metrics.ts');
  const proto = await load('proto/gen/envoy/service/auth/v3/external_auth.ts');
  const { BinaryWriter } = await import(
    pathToFileURL(`${root}/node_modules/@bufbuild/protobuf/dist/esm/wire/index.js`).href
  );

  const keyStore = new FirebaseKeyStore({ url: keys.url });
  if (!(await keyStore.refresh('initial'))) throw new Error(`${root}: keys did not load`);
  const policy = compileAuthzPolicy(benchAuthzPolicy);
  const cache = new VerifiedTokenCache(tokenCacheSize);
  const logger = createLogger('ext-authz', { level: 'warn', destination: { write: () => {} } });
  const deps = {
    policy: () => policy,
    verify: (t: string, project: string) =>
      verifyFirebaseIdToken(t, {
        projectId: project,
        resolveKey: (kid: string) => keyStore.getKey(kid),
        now: Date.now(),
        clockToleranceMs: 5_000,
        cache,
      }),
    logger,
    metrics: createExtAuthzMetrics(createMetricsRegistry('ext-authz')),
    denialLog: new DenialLogLimiter(
      { perClient: 20, perCause: 200, windowMs: 60_000 },
      () => performance.now(),
      () => {},
    ),
  };
  const writer = new BinaryWriter();
  const encode = (response: unknown) => {
    proto.CheckResponse.encode(response, writer);
    return writer.finish();
  };
  // This tree's decoder and encoder when it has them, else the generated ones (what the
  // transport calls).
  if (service.checkView) {
    const { decodeCheckRequestView } = await load('ext-authz/src/check-request.ts');
    const { encodeCheckResponse } = await load('ext-authz/src/check-response.ts');
    const encodeResponse = encodeCheckResponse
      ? (response: unknown) => {
          encodeCheckResponse(response, writer);
          return writer.finish();
        }
      : encode;
    return (bytes) => {
      const response = service.checkView(decodeCheckRequestView(bytes), deps);
      return response instanceof Promise ? response.then(encodeResponse) : encodeResponse(response);
    };
  }
  return (bytes) => (service.check(proto.CheckRequest.decode(bytes), deps) as Promise<unknown>).then(encode);
}

async function measure(call: Call, bytes: Buffer, n: number) {
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const result = call(bytes);
    if (result instanceof Promise) await result;
  }
  const wallUs = Number(process.hrtime.bigint() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { perS: (n / wallUs) * 1e6, cpuUsPerCall: (used.user + used.system) / n };
}

const paths = {
  baseline: { cached: await checkPath(trees.baseline, 10_000), uncached: await checkPath(trees.baseline, 0) },
  this: { cached: await checkPath(trees.this, 10_000), uncached: await checkPath(trees.this, 0) },
};
const cases = [
  { name: 'cached', pick: (p: (typeof paths)['this']) => p.cached, body: bodies.valid, n: iterations.cached },
  { name: 'uncached', pick: (p: (typeof paths)['this']) => p.uncached, body: bodies.valid, n: iterations.uncached },
  { name: 'denied', pick: (p: (typeof paths)['this']) => p.cached, body: bodies.forged, n: iterations.denied },
];
const samples = new Map<string, Array<{ perS: number; cpuUsPerCall: number }>>();
const chosen = cases.filter((c) => onlyCase === undefined || c.name === onlyCase);
for (let round = 0; round <= rounds; round++) {
  for (const c of chosen) {
    for (const tree of ['baseline', 'this'] as const) {
      const sample = await measure(c.pick(paths[tree]), c.body, c.n);
      const key = `${c.name} ${tree}`;
      if (round > 0) samples.set(key, [...(samples.get(key) ?? []), sample]);
    }
  }
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
console.log(`baseline: ${trees.baseline}\nthis:     ${trees.this}\n`);
console.log(`${'case'.padEnd(18)}${'calls/s'.padStart(10)}${'CPU µs/call'.padStart(14)}`);
for (const c of chosen) {
  const row = (tree: 'baseline' | 'this') => {
    const list = samples.get(`${c.name} ${tree}`) ?? [];
    return { perS: median(list.map((s) => s.perS)), cpu: median(list.map((s) => s.cpuUsPerCall)) };
  };
  const [before, after] = [row('baseline'), row('this')];
  for (const [tree, r] of [
    ['baseline', before],
    ['this', after],
  ] as const) {
    console.log(
      `${`${c.name} ${tree}`.padEnd(18)}${Math.round(r.perS).toString().padStart(10)}${r.cpu.toFixed(2).padStart(14)}`,
    );
  }
  console.log(
    `${`${c.name} CPU ratio`.padEnd(18)}${''.padStart(10)}${`${(before.cpu / after.cpu).toFixed(2)}×`.padStart(14)}\n`,
  );
}
await keys.close();
process.exit(0);
