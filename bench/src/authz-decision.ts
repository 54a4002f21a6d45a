// npm run bench:authz-decision — the per-call cost of ext-authz's decision with a token the
// verified-token cache already holds (the steady state of a signed-in client), for the rules
// a route may carry. Baseline: a plain permission check, measured in the same run, so the
// ratios hold on a noisy machine. One process, one core, no I/O: only decide()'s own work
// (claims checks, group, permissions, sign-in lists, ownership, dry-run, headers).
import { writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { generateSigningKey, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import type { AccountEntry, AccountView } from '../../ext-authz/src/accounts/state';
import { type CheckInput, decide, routeRequirements, type VerifyToken } from '../../ext-authz/src/decision';
import { importCertificateKey } from '../../ext-authz/src/firebase/key-store';
import { VerifiedTokenCache, verifyFirebaseIdToken } from '../../ext-authz/src/firebase/verify';
import { compileAuthzPolicy } from '../../ext-authz/src/policy';
import { ThreatTable, type ThreatView } from '../../ext-authz/src/threats/state';

const projectId = 'bench-salon';
const source = {
  firebase: { projectId },
  groupClaim: 'tier',
  defaultGroup: 'basic_customer',
  customerIdClaim: 'customer_id',
  groups: {
    basic_customer: { permissions: ['read:own_profile', 'read:own_appointments'] },
    verified_customer: { permissions: ['read:own_profile', 'read:own_appointments', 'create:appointments'] },
  },
};
const plainPolicy = compileAuthzPolicy(AuthzPolicy.fromPartial(source));
const listPolicy = compileAuthzPolicy(
  AuthzPolicy.fromPartial({
    ...source,
    signInProviders: ['password', 'phone', 'google.com', 'apple.com'],
    tenants: ['salon-a', 'salon-b'],
  }),
);

const key = await generateSigningKey();
const publicKey = importCertificateKey(key.certificatePem);
const token = await mintIdToken(key, {
  projectId,
  uid: 'user-bench',
  email: 'bench@example.com',
  claims: { tier: 'verified_customer', customer_id: 'c-42' },
});
const cache = new VerifiedTokenCache(100);
const verify: VerifyToken = (t, project) =>
  verifyFirebaseIdToken(t, {
    projectId: project,
    resolveKey: (kid) => (kid === key.kid ? { status: 'found', key: publicKey } : { status: 'unknown' }),
    now: Date.now(),
    clockToleranceMs: 5_000,
    cache,
  });

const input = (path: string, extensions: Record<string, string>): CheckInput => ({
  headers: {
    ':path': path,
    ':method': 'GET',
    authorization: `Bearer ${token}`,
    'user-agent': 'SalonApp/1.0',
    'x-request-id': '6f1c1b9e-0000-4000-8000-000000000000',
  },
  path,
  route: routeRequirements({ [authzContextKeys.routeId]: 'bench', ...extensions }),
});

const cases: Array<{
  case: string;
  policy: typeof plainPolicy;
  input: CheckInput;
  accounts?: AccountView;
  threats?: ThreatView;
}> = [
  {
    case: 'baseline: permission check',
    policy: plainPolicy,
    input: input('/api/v1/customer/profile', { [authzContextKeys.permissions]: 'read:own_profile' }),
  },
  {
    case: 'sign-in providers and tenants listed',
    policy: listPolicy,
    input: input('/api/v1/customer/profile', { [authzContextKeys.permissions]: 'read:own_profile' }),
  },
  {
    case: 'owner: path segment',
    policy: plainPolicy,
    input: input('/api/v1/customers/c-42', {
      [authzContextKeys.permissions]: 'read:own_profile',
      [authzContextKeys.ownerPathSegment]: '4',
    }),
  },
  {
    case: 'owner: query parameter',
    policy: plainPolicy,
    input: input('/api/v1/points?customer_id=c-42&page=2', {
      [authzContextKeys.permissions]: 'read:own_profile',
      [authzContextKeys.ownerQuery]: 'customer_id',
    }),
  },
  {
    case: 'dry-run: a would-be denial let through',
    policy: plainPolicy,
    input: input('/api/v1/admin', {
      [authzContextKeys.permissions]: 'delete:everything',
      [authzContextKeys.dryRun]: 'true',
    }),
  },
  {
    case: 'auth: optional, no token',
    policy: plainPolicy,
    input: {
      ...input('/api/v1/menu', { [authzContextKeys.auth]: 'optional' }),
      headers: { ':path': '/api/v1/menu', ':method': 'GET' },
    },
  },
];

// The account state as a replica holds it (RedisAccountStore.get is this Map lookup): 100,000
// accounts with some state, the caller among them or not.
const table = new Map<string, AccountEntry>();
for (let i = 0; i < 100_000; i++) table.set(`user-${i}`, i % 2 === 0 ? { disabled: true } : { validAfter: 1_000 });
const accountsWithout: AccountView = { loaded: true, get: (uid) => table.get(uid) };
const withCaller = new Map(table).set('user-bench', { validAfter: 1_000, group: 'verified_customer' });
const accountsWith: AccountView = { loaded: true, get: (uid) => withCaller.get(uid) };
const permission = { [authzContextKeys.permissions]: 'read:own_profile' };
cases.push(
  {
    case: 'account state: 100,000 accounts held, none for the caller',
    policy: plainPolicy,
    input: input('/api/v1/customer/profile', permission),
    accounts: accountsWithout,
  },
  {
    case: 'account state: the caller revoked earlier (signed in since) and a group override',
    policy: plainPolicy,
    input: input('/api/v1/customer/profile', permission),
    accounts: accountsWith,
  },
);

// The threat detector's blocks as a replica holds them: 10,000 IPs and 10,000 users blocked,
// the caller (client IP and uid) not among them.
const blocks = new ThreatTable();
const until = Date.now() + 3_600_000;
blocks.replace(
  Array.from({ length: 20_000 }, (_, i) =>
    i % 2 === 0
      ? {
          kind: 'ip' as const,
          subject: `10.0.${i >> 8}.${i & 255}`,
          rule: 'brute_force',
          severity: 'high',
          untilMs: until,
        }
      : {
          kind: 'user' as const,
          subject: `user-${i}`,
          rule: 'data_exfiltration',
          severity: 'critical',
          untilMs: until,
        },
  ),
);
cases.push({
  case: 'threat blocks: 20,000 held (IPs and users), none for the caller',
  policy: plainPolicy,
  input: { ...input('/api/v1/customer/profile', permission), clientIp: '192.0.2.10' },
  threats: blocks,
});

const batch = 200;
const batches = Number(process.env.BENCH_BATCHES ?? 300);

async function run(c: (typeof cases)[number]) {
  const first = await decide(c.input, c.policy, verify, c.accounts, c.threats);
  if (!first.allow) throw new Error(`${c.case}: expected an allow, got ${JSON.stringify(first)}`);
  for (let i = 0; i < 2_000; i++) await decide(c.input, c.policy, verify, c.accounts, c.threats);
  const perCall: number[] = [];
  const started = performance.now();
  for (let b = 0; b < batches; b++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) await decide(c.input, c.policy, verify, c.accounts, c.threats);
    perCall.push((performance.now() - t0) / batch);
  }
  const seconds = (performance.now() - started) / 1000;
  perCall.sort((a, b) => a - b);
  const at = (q: number) =>
    Number((perCall[Math.min(perCall.length - 1, Math.floor(q * perCall.length))] ?? 0).toFixed(4));
  return {
    case: c.case,
    concurrency: 1,
    throughput_per_s: Math.round((batch * batches) / seconds),
    // Percentiles of the mean call time per batch of 200 calls (a single call is below the timer's resolution).
    p50_ms: at(0.5),
    p99_ms: at(0.99),
    p999_ms: at(0.999),
  };
}

const results = [];
for (const c of cases) results.push(await run(c));
const baseline = results[0]?.throughput_per_s ?? 1;
const report = {
  name: 'authz-decision',
  node: process.version,
  cpu: `${cpus()[0]?.model ?? 'unknown'} x${cpus().length}`,
  timestamp: new Date().toISOString(),
  cores: 'one (a single in-process loop, no load generator)',
  results: results.map((r) => ({ ...r, relative_to_baseline: Number((r.throughput_per_s / baseline).toFixed(3)) })),
};
await writeFile(
  join(import.meta.dirname, '..', 'results', 'authz-decision.json'),
  `${JSON.stringify(report, null, 2)}\n`,
);
console.log(JSON.stringify(report, null, 2));
