import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import type { RedisOutageControl } from '@sekisho/devstack/redis';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStackLogsOnFailure, writeDefinitionFile } from './support';

// The reference design's auth-endpoint block (5 a minute, then 15 minutes) through the whole
// stack (a real Envoy over ADS, ext-authz, the rate-limit service and redis-server) with the
// definition's redisFailureMode: local. The block earned before Redis goes away still refuses
// while redis-server is killed and while it is frozen (SIGSTOP), and after it returns; during
// the outage the per-user limit keeps refusing, decided in the replica's memory (under allow it
// would lift: gateway.e2e.test.ts pins that). The block holds from the replica's local cache of
// known refusals, which every mode consults before Redis.
//
// Then two rate-limit replicas behind Envoy (policyServices.rateLimit.addresses, one Envoy
// worker so its round robin alternates): a block earned through one is announced to the other,
// and during the outage every sign-in is refused as blocked, whichever replica Envoy asks.
// Without the announcement, the replica that never saw the block would let the address
// through on its fresh in-memory count (2 a minute over 2 replicas: 1).

let stack: Stack;
let dir: string;
let control: RedisOutageControl;

const authLimit = 2;
const userLimit = 3;

/** The definition of both stacks: `rateLimit` is one address, or the addresses of several replicas. */
async function writeDefinition(definitionFile: string, rateLimit: { address: string } | { addresses: string[] }) {
  const [gateway, customer, extAuthz] = await Promise.all(Array.from({ length: 3 }, () => freePort()));
  await writeDefinitionFile(definitionFile, {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-outage' },
      groupClaim: 'tier',
      groups: { customer: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { ...rateLimit, timeout: '2s', failureMode: 'allow', redisFailureMode: 'local' },
    },
    services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
    limits: {
      authenticated: [{ per: 'user', limit: userLimit, window: '1m' }],
      unauthenticated: [{ per: 'ip', limit: 1000, window: '1m' }],
    },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      {
        match: '/api/v1/auth/*',
        to: 'customer',
        rewrite: '/auth/',
        auth: 'none',
        limits: [{ per: 'ip', limit: authLimit, window: '1m', blockFor: '15m' }],
      },
    ],
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-e2e-outage-'));
  const definitionFile = join(dir, 'gateway.yaml');
  await writeDefinition(definitionFile, { address: `127.0.0.1:${await freePort()}` });
  stack = await startStack({ definitionFile, logLevel: 'info' });
  if (!stack.redis.control)
    throw new Error('this test needs a redis-server the stack started itself (unset REDIS_URL)');
  control = stack.redis.control;
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit & { token?: string } = {}, on: Stack = stack) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const response = await fetch(`${on.gatewayUrl}${path}`, { ...init, headers, signal: AbortSignal.timeout(5000) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}
const signIn = (on: Stack = stack) => call('/api/v1/auth/sign-in', { method: 'POST', body: '{}' }, on);

const expectBlocked = async (on: Stack = stack) => {
  const refused = await signIn(on);
  expect(refused.status).toBe(429);
  expect(JSON.parse(refused.text)).toMatchObject({ success: false, error: { code: 'RATE_LIMIT_EXCEEDED' } });
  // The rest of the 15-minute block, not of a one-minute window.
  expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(60);
  return refused;
};

const readyDetails = async () => {
  const response = await fetch(`${stack.ratelimitAdminUrl}/readyz`);
  return ((await response.json()) as { details: Record<string, unknown> }).details;
};

describe('the auth route block through a Redis outage with redisFailureMode: local', () => {
  it('keeps the block while Redis is killed and frozen, limits in memory meanwhile, and after it returns', async () => {
    showStackLogsOnFailure(() => stack);
    const attempts: number[] = [];
    for (let i = 0; i < authLimit; i++) attempts.push((await signIn()).status);
    expect(attempts).toEqual([200, 200]);
    const first = await expectBlocked();
    expect(JSON.parse(first.text).error.retry_after).toBeDefined();
    expect(await readyDetails()).toMatchObject({ failure_mode: 'local', mode_in_force: 'redis' });

    await control.down();
    try {
      const blocked = await expectBlocked();
      expect(JSON.parse(blocked.text).error.code).toBe('RATE_LIMIT_EXCEEDED');
      expect(blocked.headers.get('ratelimit-policy')).toContain(`;q=${authLimit};w=60`);

      // The per-user limit is still enforced, counted in the replica's memory from the outage's start.
      const token = await stack.mintToken('user-outage', { group: 'customer' });
      const statuses: number[] = [];
      for (let i = 0; i < userLimit + 1; i++) statuses.push((await call('/api/v1/customer/profile', { token })).status);
      expect(statuses).toEqual([200, 200, 200, 429]);
      expect(await readyDetails()).toMatchObject({ mode_in_force: 'local' });
    } finally {
      await control.up();
    }

    // Frozen: connected but silent. The open breaker or the command timeout answer, never a hang.
    control.pause();
    try {
      await expectBlocked();
    } finally {
      control.resume();
    }

    await expectBlocked();
    const metrics = await (await fetch(`${stack.ratelimitAdminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /sekisho_ratelimit_over_limit_with_local_cache_total\{[^}]*rule="route:[^"]*"[^}]*\} [1-9]/,
    );
  });
});

/** A counter's value on a replica's /metrics, summed over its series that match `labels`. */
async function counter(adminUrl: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n'))
    if ((line.startsWith(`${name} `) || line.startsWith(`${name}{`)) && line.includes(labels))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

describe('two rate-limit replicas behind Envoy: the block holds on both through the outage', () => {
  let pair: Stack;
  let pairDir: string;

  beforeAll(async () => {
    pairDir = await mkdtemp(join(tmpdir(), 'sekisho-e2e-outage-pair-'));
    const definitionFile = join(pairDir, 'gateway.yaml');
    const [a, b] = await Promise.all([freePort(), freePort()]);
    await writeDefinition(definitionFile, { addresses: [`127.0.0.1:${a}`, `127.0.0.1:${b}`] });
    pair = await startStack({ definitionFile, logLevel: 'info', envoyConcurrency: 1 });
    if (!pair.redis.control)
      throw new Error('this test needs a redis-server the stack started itself (unset REDIS_URL)');
  });

  afterAll(async () => {
    await pair?.stop();
    if (pairDir) await rm(pairDir, { recursive: true, force: true });
  });

  it('refuses the blocked address on every replica while Redis is down, with the block’s remaining time', async () => {
    showStackLogsOnFailure(() => pair);
    const replicas = pair.ratelimitAdminUrls;
    expect(replicas).toHaveLength(2);
    const attempts: number[] = [];
    for (let i = 0; i < authLimit; i++) attempts.push((await signIn(pair)).status);
    expect(attempts).toEqual([200, 200]);
    await expectBlocked(pair);
    // The replica that did not start the block learns it from the announcement.
    const learned = async () =>
      (await Promise.all(replicas.map((url) => counter(url, 'sekisho_ratelimit_blocks_learned_total')))).reduce(
        (a, b) => a + b,
      );
    const deadline = Date.now() + 10_000;
    while ((await learned()) < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await learned()).toBe(1);

    await pair.redis.control?.down();
    try {
      // Until each replica has answered at least once from its cache (Envoy alternates between them).
      const fromCache = () =>
        Promise.all(
          replicas.map((url) => counter(url, 'sekisho_ratelimit_over_limit_with_local_cache_total', 'rule="route:')),
        );
      const before = await fromCache();
      for (let i = 0; i < 20; i++) {
        const refused = await expectBlocked(pair);
        expect(JSON.parse(refused.text).error.code).toBe('RATE_LIMIT_EXCEEDED');
        const now = await fromCache();
        if (now.every((count, r) => count > (before[r] as number))) break;
      }
      const after = await fromCache();
      expect(after.map((count, r) => count > (before[r] as number))).toEqual([true, true]);
    } finally {
      await pair.redis.control?.up();
    }
  });
});
