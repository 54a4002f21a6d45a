import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { stringify } from 'yaml';

// Sekisho's own limit algorithms through the whole stack (devstack's startStack: a real Envoy
// configured over ADS by the control plane, the real ext-authz and rate-limit services and
// redis-server): a sliding-window route limit refuses with the 429 JSON body and headers, and
// the request it refuses is not counted against the caller's per-user limit (envoyproxy/
// ratelimit would count it). Both descriptors travel in one ShouldRateLimit (the ratelimit
// filter after ext_authz), decided by one Lua script.

let stack: Stack;
let dir: string;

const routeLimit = 2;
const userLimit = 5;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-e2e-algorithms-'));
  const definitionFile = join(dir, 'gateway.yaml');
  const [gateway, customer, appointment, extAuthz, rateLimit] = await Promise.all(
    Array.from({ length: 5 }, () => freePort()),
  );
  const definition = {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-algorithms' },
      groupClaim: 'tier',
      groups: { customer: ['read:own_profile', 'create:appointments'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
    },
    services: {
      customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' },
      appointment: { endpoints: [`127.0.0.1:${appointment}`], healthCheck: '/health' },
    },
    limits: { authenticated: [{ per: 'user', limit: userLimit, window: '1h' }] },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      {
        match: 'POST /api/v1/appointments',
        to: 'appointment',
        rewrite: '/appointments',
        require: ['create:appointments'],
        limits: [{ per: 'user', limit: routeLimit, window: '1m', algorithm: 'sliding' }],
      },
    ],
  };
  await writeFile(definitionFile, stringify(definition));
  stack = await startStack({ definitionFile, logLevel: 'info' });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function call(path: string, token: string, method = 'GET') {
  const response = await fetch(`${stack.gatewayUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
    body: method === 'GET' ? undefined : '{}',
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}

describe('a sliding-window route limit through Envoy', () => {
  it('refuses with 429 JSON and headers, and the refused request is not counted against the per-user limit', async () => {
    onTestFailed(() => console.error(stack?.logs()));
    const token = await stack.mintToken('user-sliding', { group: 'customer' });
    const book = () => call('/api/v1/appointments', token, 'POST');

    for (let i = 0; i < routeLimit; i++) expect((await book()).status).toBe(200);
    const refused = await book();
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toMatch(/application\/json/);
    const body = JSON.parse(refused.text);
    expect(body).toMatchObject({ success: false, error: { code: 'RATE_LIMIT_EXCEEDED' }, data: null });
    expect(body.error.correlation_id).toMatch(/^[0-9a-f-]{36}$/);
    // The sliding minute frees a place when the first booking leaves it: within 60 s.
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // The current IETF draft's fields: the refusing limit's state, and every limit's policy.
    expect(refused.headers.get('ratelimit')).toMatch(/;r=0;t=\d+$/);
    expect(refused.headers.get('ratelimit-policy')).toContain(`;q=${routeLimit};w=60`);

    // The per-user hour saw the two bookings and this request, not the refused one.
    const profile = await call('/api/v1/customer/profile', token);
    expect(profile.status).toBe(200);
    expect(profile.headers.get('ratelimit-policy')).toContain(`;q=${userLimit};w=`);
    expect(profile.headers.get('ratelimit')).toMatch(new RegExp(`;r=${userLimit - routeLimit - 1};t=\\d+$`));
  });
});
