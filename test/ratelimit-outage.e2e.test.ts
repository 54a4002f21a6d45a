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

let stack: Stack;
let dir: string;
let control: RedisOutageControl;

const authLimit = 2;
const userLimit = 3;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-e2e-outage-'));
  const definitionFile = join(dir, 'gateway.yaml');
  const [gateway, customer, extAuthz, rateLimit] = await Promise.all(Array.from({ length: 4 }, () => freePort()));
  await writeDefinitionFile(definitionFile, {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-outage' },
      groupClaim: 'tier',
      groups: { customer: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow', redisFailureMode: 'local' },
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
  stack = await startStack({ definitionFile, logLevel: 'info' });
  if (!stack.redis.control)
    throw new Error('this test needs a redis-server the stack started itself (unset REDIS_URL)');
  control = stack.redis.control;
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit & { token?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const response = await fetch(`${stack.gatewayUrl}${path}`, { ...init, headers, signal: AbortSignal.timeout(5000) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}
const signIn = () => call('/api/v1/auth/sign-in', { method: 'POST', body: '{}' });

const expectBlocked = async () => {
  const refused = await signIn();
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
