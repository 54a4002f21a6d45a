import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import type { RedisOutageControl } from '@sekisho/devstack/redis';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// policyServices.rateLimit.perUserLimits: ext-authz through a real Envoy: the per-user limits
// (limits.authenticated and a route's own) are counted in ext-authz's Check, shared by its two
// replicas through Redis, with no second ratelimit filter in Envoy; the per-IP limits stay
// before authentication in the rate-limit service; a Redis outage lets users through.

let stack: Stack;
let dir: string;
let control: RedisOutageControl;

/** limits.authenticated, per user per minute. */
const userLimit = 6;
/** The booking route's own per-user limit, per minute. */
const bookingLimit = 2;
/** limits.unauthenticated, per IP per minute. */
const anonymousLimit = 3;

beforeAll(async () => {
  const [gateway, customer, extAuthzA, extAuthzB, rateLimit] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  dir = await mkdtemp(join(tmpdir(), 'sekisho-user-limits-'));
  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(
    definitionFile,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: gateway } },
      identity: {
        firebase: { projectId: 'demo-sekisho-user-limits' },
        groupClaim: 'tier',
        groups: { member: ['create:appointments'] },
      },
      policyServices: {
        extAuthz: { addresses: [`127.0.0.1:${extAuthzA}`, `127.0.0.1:${extAuthzB}`], timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', perUserLimits: 'ext-authz' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`] } },
      limits: {
        authenticated: [{ per: 'user', limit: userLimit, window: '1m' }],
        unauthenticated: [{ per: 'ip', limit: anonymousLimit, window: '1m' }],
      },
      routes: [
        {
          id: 'bookings',
          match: 'POST /api/v1/bookings',
          to: 'customer',
          require: ['create:appointments'],
          limits: [{ per: 'user', limit: bookingLimit, window: '1m' }],
        },
        { id: 'profile', match: 'GET /api/v1/profile', to: 'customer', require: ['create:appointments'] },
        { match: '/api/v1/public/*', to: 'customer', auth: 'none' },
      ],
    }),
  );
  stack = await startStack({ definitionFile });
  if (!stack.redis.control)
    throw new Error('this test needs a redis-server the stack started itself (unset REDIS_URL)');
  control = stack.redis.control;
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack, 60);

async function call(path: string, init: RequestInit & { token?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const response = await fetch(`${stack.gatewayUrl}${path}`, { ...init, headers, signal: AbortSignal.timeout(5000) });
  return { status: response.status, headers: response.headers, text: await response.text() };
}
const book = (token: string) => call('/api/v1/bookings', { method: 'POST', body: '{}', token });

/** A counter's sum over its series whose line contains `filter`, from one admin /metrics. */
async function metric(url: string, name: string, filter = ''): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(name) && line.includes(filter))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

describe('per-user limits counted in ext-authz (perUserLimits: ext-authz)', () => {
  it('gives Envoy no second ratelimit filter: the per-IP one before ext_authz only', async () => {
    showLogsOnFailure();
    const dump = await (await fetch(`${stack.envoyAdminUrl}/config_dump?resource=dynamic_listeners`)).text();
    expect(dump).toContain('sekisho.filters.http.ratelimit_before_auth');
    expect(dump).not.toContain('"envoy.filters.http.ratelimit"');
    // The routes (RDS) name the families ext-authz counts for them (Envoy redacts the values:
    // context_extensions is a sensitive field), on the two routes with a verified user.
    const routes = await (await fetch(`${stack.envoyAdminUrl}/config_dump?resource=dynamic_route_configs`)).text();
    expect(routes.match(/"sekisho\.user_limits"/g)).toHaveLength(2);
  });

  it("refuses the request over the route's own limit with the gateway's 429, whichever replica counts it", async () => {
    showLogsOnFailure();
    // Both replicas in Envoy's rotation first (the second may not have passed its health check yet).
    const warmUp = await stack.mintToken('warm-up', { group: 'member' });
    const checks = () =>
      Promise.all(stack.extAuthzAdminUrls.map((url) => metric(url, 'sekisho_ext_authz_checks_total')));
    for (let i = 0; (await checks()).some((count) => count === 0); i++) {
      if (i > 100) throw new Error('the second ext-authz replica never answered a Check');
      await call('/api/v1/profile', { token: warmUp });
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const before = await checks();
    const token = await stack.mintToken('booker-1', { group: 'member' });
    const answers = [];
    for (let i = 0; i < bookingLimit + 1; i++) answers.push(await book(token));
    expect(answers.map((a) => a.status)).toEqual([...Array(bookingLimit).fill(200), 429]);
    // Within the limits: the RateLimit fields of the most restrictive limit reach the client.
    expect(answers[0]?.headers.get('ratelimit-policy')).toContain(`"route:bookings/user/60s";q=${bookingLimit};w=60`);
    expect(answers[0]?.headers.get('ratelimit')).toMatch(/^"route:bookings\/user\/60s";r=1;t=\d+$/);
    const refused = answers[bookingLimit];
    expect(refused?.headers.get('content-type')).toMatch(/^application\/json/);
    const retryAfter = refused?.headers.get('retry-after');
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(refused?.text ?? '{}')).toMatchObject({
      success: false,
      error: { code: 'RATE_LIMIT_EXCEEDED', retry_after: retryAfter },
    });
    // Both replicas answered Checks (Envoy's round robin), and the count held across them.
    const after = await checks();
    expect(after.map((count, i) => count - (before[i] ?? 0))).not.toContain(0);
    // Another user, and the same user on another route, are not refused by it.
    expect((await book(await stack.mintToken('booker-2', { group: 'member' }))).status).toBe(200);
    expect((await call('/api/v1/profile', { token })).status).toBe(200);
    // The rate-limit service never saw a per-user descriptor.
    expect(await metric(stack.ratelimitAdminUrl, 'sekisho_ratelimit_decisions_total', 'rule="authenticated/user')).toBe(
      0,
    );
    expect(await metric(stack.ratelimitAdminUrl, 'sekisho_ratelimit_decisions_total', '/user/')).toBe(0);
  });

  it('counts limits.authenticated per user over every route, and leaves the per-IP limits to the rate-limit service', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('reader-1', { group: 'member' });
    const statuses = [];
    for (let i = 0; i < userLimit + 1; i++) statuses.push((await call('/api/v1/profile', { token })).status);
    expect(statuses).toEqual([...Array(userLimit).fill(200), 429]);

    const anonymous = [];
    for (let i = 0; i < anonymousLimit + 1; i++) anonymous.push((await call('/api/v1/public/menu')).status);
    expect(anonymous).toEqual([...Array(anonymousLimit).fill(200), 429]);
    expect(
      await metric(stack.ratelimitAdminUrl, 'sekisho_ratelimit_decisions_total', 'rule="unauthenticated/ip'),
    ).toBeGreaterThan(0);
  });

  it('lets verified users through while Redis is down (failure mode allow), and still refuses a bad token', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('outage-1', { group: 'member' });
    expect((await call('/api/v1/profile', { token })).status).toBe(200);
    await control.down();
    try {
      for (let i = 0; i < 3; i++) expect((await call('/api/v1/profile', { token })).status).toBe(200);
      expect((await call('/api/v1/profile', { token: 'not-a-token' })).status).toBe(401);
    } finally {
      await control.up();
    }
  });
});
