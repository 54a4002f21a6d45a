// npm run bench:authz-micro — two pieces of ext-authz's Check, each beside what it replaced,
// in one process, alternating rounds so a noisy machine hits both sides alike:
//
// - RS256: jose's compactVerify (WebCrypto: the work goes to libuv's threadpool and comes back
//   as a promise; a failed signature is a thrown JOSEError) against node:crypto's one-shot
//   `verify` on this thread with a KeyObject built once (what firebase/verify.ts does now);
//   a valid and a forged signature; jose sequentially (one in flight) and with 64 in flight.
//   CPU time is process.cpuUsage(): every thread, the threadpool's included.
// - CheckRequest: the generated ts-proto decode followed by the old conversion to what Check
//   reads, against check-request.ts's decoder, on the benchmark's request and on one shaped
//   like Envoy's (both peers, time, a dozen headers, five context extensions, metadata).
//
// `--quick`: fewer iterations. Run it pinned to see the one-core picture:
// `taskset -c 0 npx tsx bench/src/authz-micro.ts`.
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { generateSigningKey, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import { compactVerify, importX509 } from 'jose';
import { decodeCheckRequestView, viewOfCheckRequest } from '../../ext-authz/src/check-request';
import { importCertificateKey } from '../../ext-authz/src/firebase/key-store';
import { VerifiedTokenCache, verifyFirebaseIdToken } from '../../ext-authz/src/firebase/verify';

const quick = process.argv.includes('--quick');
const rounds = quick ? 3 : 5;
const rsaIterations = quick ? 1_500 : 4_000;
const decodeIterations = quick ? 30_000 : 100_000;

const projectId = 'bench-salon';
const key = await generateSigningKey();
const token = await mintIdToken(key, {
  projectId,
  uid: 'user-bench',
  email: 'bench@example.com',
  claims: { tier: 'verified_customer' },
});
const [header64, payload64, signature64] = token.split('.') as [string, string, string];
const forged = `${header64}.${payload64}.${Buffer.from(signature64, 'base64url').reverse().toString('base64url')}`;
const joseKey = await importX509(key.certificatePem, 'RS256');
const keyObject: KeyObject = importCertificateKey(key.certificatePem);

interface Sample {
  case: string;
  per_s: number;
  us_per_op: number;
  cpu_us_per_op: number;
}

async function measure(name: string, iterations: number, run: () => unknown | Promise<unknown>): Promise<Sample> {
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    const result = run();
    if (result instanceof Promise) await result;
  }
  const wallUs = Number(process.hrtime.bigint() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    case: name,
    per_s: Math.round((iterations / wallUs) * 1e6),
    us_per_op: wallUs / iterations,
    cpu_us_per_op: (used.user + used.system) / iterations,
  };
}

/** `inFlight` calls of an async function kept going until `iterations` were started. */
async function measureConcurrent(name: string, iterations: number, inFlight: number, run: () => Promise<unknown>) {
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  let started = 0;
  const worker = async () => {
    while (started < iterations) {
      started++;
      await run();
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const wallUs = Number(process.hrtime.bigint() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    case: name,
    per_s: Math.round((iterations / wallUs) * 1e6),
    us_per_op: wallUs / iterations,
    cpu_us_per_op: (used.user + used.system) / iterations,
  };
}

const signingInput = Buffer.from(`${header64}.${payload64}`, 'latin1');
const signature = Buffer.from(signature64, 'base64url');
const joseValid = async () => compactVerify(token, joseKey);
const joseForged = async () => {
  try {
    await compactVerify(forged, joseKey);
  } catch {
    // JOSEError: what a forged token cost before
  }
};
const syncValid = () => {
  if (!cryptoVerify('sha256', signingInput, keyObject, signature)) throw new Error('valid signature refused');
};
const forgedSignature = Buffer.from(forged.split('.')[2] as string, 'base64url');
const syncForged = () => {
  if (cryptoVerify('sha256', signingInput, keyObject, forgedSignature)) throw new Error('forged signature accepted');
};
const resolveKey = (kid: string) =>
  kid === key.kid ? ({ status: 'found', key: keyObject } as const) : ({ status: 'unknown' } as const);
const verifyOpts = { projectId, resolveKey, clockToleranceMs: 5_000 };
const fullUncached = () => verifyFirebaseIdToken(token, { ...verifyOpts, now: Date.now() });
const fullForged = () => verifyFirebaseIdToken(forged, { ...verifyOpts, now: Date.now() });
const cache = new VerifiedTokenCache(100);
const fullCached = () => verifyFirebaseIdToken(token, { ...verifyOpts, now: Date.now(), cache });
// Sanity: the functions answer what they should before they are timed.
if (!(fullUncached() as { ok: boolean }).ok || (fullForged() as { ok: boolean }).ok) throw new Error('verify broken');
await joseValid();

// The benchmark's request (bench/src/authz.ts) and one shaped like what Envoy sends.
const benchRequest = CheckRequest.encode(
  CheckRequest.fromPartial({
    attributes: {
      source: { address: { socketAddress: { address: '203.0.113.7', portValue: 40000 } } },
      contextExtensions: {
        [authzContextKeys.routeId]: 'bench',
        [authzContextKeys.permissions]: 'read:own_profile',
      },
      request: {
        http: {
          method: 'GET',
          path: '/api/v1/customer/profile',
          headers: { 'x-request-id': 'bench', authorization: `Bearer ${token}` },
        },
      },
    },
  }),
).finish();
const envoyRequest = CheckRequest.encode(
  CheckRequest.fromPartial({
    attributes: {
      source: { address: { socketAddress: { address: '203.0.113.7', portValue: 51234 } } },
      destination: { address: { socketAddress: { address: '10.0.0.5', portValue: 8080 } } },
      request: {
        time: new Date(),
        http: {
          id: '15839420817312645678',
          method: 'GET',
          headers: {
            ':authority': 'api.salon.test',
            ':path': '/api/v1/customer/profile',
            ':method': 'GET',
            ':scheme': 'https',
            authorization: `Bearer ${token}`,
            'user-agent': 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15',
            accept: 'application/json',
            'accept-encoding': 'gzip, deflate, br',
            'accept-language': 'ja,en;q=0.8',
            'x-forwarded-proto': 'https',
            'x-request-id': '2f6a7a3e-5f2b-4c1d-9a1e-1b2c3d4e5f60',
            'x-sekisho-client-ip': '203.0.113.7',
          },
          path: '/api/v1/customer/profile',
          host: 'api.salon.test',
          scheme: 'https',
          protocol: 'HTTP/2',
        },
      },
      contextExtensions: {
        [authzContextKeys.routeId]: 'profile',
        [authzContextKeys.permissions]: 'read:own_profile',
        [authzContextKeys.auth]: 'required',
        [authzContextKeys.maxRequestHeaders]: '100',
        [authzContextKeys.maxRequestHeaderBytes]: '61440',
      },
      metadataContext: {},
      routeMetadataContext: {},
    },
  }),
).finish();
const generatedDecode = (bytes: Uint8Array) => () => viewOfCheckRequest(CheckRequest.decode(bytes));
const ownDecode = (bytes: Uint8Array) => () => decodeCheckRequestView(bytes);
for (const bytes of [benchRequest, envoyRequest]) {
  if (JSON.stringify(generatedDecode(bytes)()) !== JSON.stringify(ownDecode(bytes)()))
    throw new Error('decoders differ');
}

const cases: Array<[string, number, () => Promise<Sample>]> = [
  ['rs256 valid: jose compactVerify, 1 in flight', rsaIterations, () => measure('', rsaIterations, joseValid)],
  [
    'rs256 valid: jose compactVerify, 64 in flight',
    rsaIterations,
    () => measureConcurrent('', rsaIterations, 64, joseValid),
  ],
  ['rs256 valid: node:crypto verify (sync)', rsaIterations, () => measure('', rsaIterations, syncValid)],
  [
    'rs256 forged: jose compactVerify (throws), 1 in flight',
    rsaIterations,
    () => measure('', rsaIterations, joseForged),
  ],
  [
    'rs256 forged: jose compactVerify (throws), 64 in flight',
    rsaIterations,
    () => measureConcurrent('', rsaIterations, 64, joseForged),
  ],
  ['rs256 forged: node:crypto verify (sync, false)', rsaIterations, () => measure('', rsaIterations, syncForged)],
  ['verifyFirebaseIdToken: uncached, valid', rsaIterations, () => measure('', rsaIterations, fullUncached)],
  ['verifyFirebaseIdToken: forged', rsaIterations, () => measure('', rsaIterations, fullForged)],
  ['verifyFirebaseIdToken: cached hit', decodeIterations, () => measure('', decodeIterations, fullCached)],
  [
    'CheckRequest (bench): generated decode + conversion',
    decodeIterations,
    () => measure('', decodeIterations, generatedDecode(benchRequest)),
  ],
  [
    'CheckRequest (bench): decodeCheckRequestView',
    decodeIterations,
    () => measure('', decodeIterations, ownDecode(benchRequest)),
  ],
  [
    'CheckRequest (Envoy-shaped): generated decode + conversion',
    decodeIterations,
    () => measure('', decodeIterations, generatedDecode(envoyRequest)),
  ],
  [
    'CheckRequest (Envoy-shaped): decodeCheckRequestView',
    decodeIterations,
    () => measure('', decodeIterations, ownDecode(envoyRequest)),
  ],
];

// A warm-up round (not kept), then alternating rounds; the median of each case is reported.
const samples = new Map<string, Sample[]>();
for (let round = 0; round <= rounds; round++) {
  for (const [name, , run] of cases) {
    const sample = { ...(await run()), case: name };
    if (round > 0) samples.set(name, [...(samples.get(name) ?? []), sample]);
  }
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const results = [...samples].map(([name, list]) => ({
  case: name,
  per_s: median(list.map((s) => s.per_s)),
  us_per_op: Number(median(list.map((s) => s.us_per_op)).toFixed(2)),
  cpu_us_per_op: Number(median(list.map((s) => s.cpu_us_per_op)).toFixed(2)),
  runs_per_s: list.map((s) => s.per_s),
}));

const width = Math.max(...results.map((r) => r.case.length));
console.log(`${'case'.padEnd(width)}  ${'ops/s'.padStart(10)}  ${'µs/op'.padStart(8)}  ${'CPU µs/op'.padStart(10)}`);
for (const r of results) {
  console.log(
    `${r.case.padEnd(width)}  ${String(r.per_s).padStart(10)}  ${r.us_per_op.toFixed(2).padStart(8)}  ${r.cpu_us_per_op.toFixed(2).padStart(10)}`,
  );
}
const file = join(import.meta.dirname, '..', 'results', 'authz-micro.json');
await writeFile(
  file,
  `${JSON.stringify(
    {
      name: 'authz-micro',
      node: process.version,
      cpu: cpus()[0]?.model ?? 'unknown',
      timestamp: new Date().toISOString(),
      notes: { rounds, rsa_iterations: rsaIterations, decode_iterations: decodeIterations, quick },
      results,
    },
    null,
    2,
  )}\n`,
);
console.log(`\nwrote ${file}`);
