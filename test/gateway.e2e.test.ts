import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStackLogsOnFailure, writeDefinitionFile } from './support';

// The walking skeleton, end to end: requests go through a real Envoy configured
// over ADS by the control plane, which calls the real ext-authz and rate-limit
// services (Redis-backed) and reaches a real upstream.

interface Echo {
  service: string;
  method: string;
  path: string;
  headers: Record<string, string>;
}

interface ErrorJson {
  success: false;
  error: {
    code: string;
    message: string;
    correlation_id: string;
    timestamp: string;
    required_permissions?: string[];
  };
  data: null;
}

let stack: Stack;
let dir: string;
let definitionFile: string;
let definition: Record<string, unknown>;

async function buildDefinition() {
  const [gateway, customer, appointment, extAuthz, rateLimit] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  return {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-e2e' },
      groupClaim: 'tier',
      groups: {
        basic_customer: ['read:own_profile', 'read:own_appointments'],
        verified_customer: { inherits: 'basic_customer', adds: ['update:own_profile', 'create:appointments'] },
      },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
    },
    services: {
      customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' },
      appointment: { endpoints: [`127.0.0.1:${appointment}`], healthCheck: '/health' },
    },
    limits: {
      authenticated: [{ per: 'user', limit: 1000, window: '1m' }],
      unauthenticated: [{ per: 'ip', limit: 1000, window: '1m' }],
    },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      { match: 'PUT /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['update:own_profile'] },
      {
        match: 'POST /api/v1/appointments',
        to: 'appointment',
        rewrite: '/appointments',
        require: ['create:appointments'],
        limits: [{ per: 'user', limit: 3, window: '1m' }],
      },
      { match: '/api/v1/auth/*', to: 'customer', auth: 'none', limits: [{ per: 'ip', limit: 100, window: '1m' }] },
      {
        match: 'POST /api/v1/password-reset',
        to: 'customer',
        auth: 'none',
        limits: [{ per: 'ip', limit: 2, window: '1m', blockFor: '15m' }],
      },
    ],
  };
}

async function writeDefinition(content: Record<string, unknown>) {
  await writeDefinitionFile(definitionFile, content);
}

async function call(path: string, init: RequestInit & { token?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const response = await fetch(`${stack.gatewayUrl}${path}`, { ...init, headers });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return {
    status: response.status,
    headers: response.headers,
    text,
    /** The reference design's error body (for denials). */
    body: json as ErrorJson,
    /** What the demo upstream received (for forwarded requests). */
    echo: json as Echo,
  };
}

async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-e2e-'));
  definitionFile = join(dir, 'gateway.yaml');
  definition = await buildDefinition();
  await writeDefinition(definition);
  stack = await startStack({ definitionFile, logLevel: 'info' });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack);

describe('walking skeleton through a real Envoy', () => {
  it('answers 401 MISSING_TOKEN in the reference JSON format when no token is sent', async () => {
    showLogsOnFailure();
    const response = await call('/api/v1/customer/profile');
    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toContain('application/json');
    expect(response.body).toMatchObject({
      success: false,
      error: { code: 'MISSING_TOKEN', message: 'アクセストークンが必要です' },
      data: null,
    });
    expect(response.body.error.correlation_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number.isNaN(Date.parse(response.body.error.timestamp))).toBe(false);
  });

  it('answers 401 INVALID_TOKEN for a malformed token and TOKEN_EXPIRED for an expired one', async () => {
    showLogsOnFailure();
    const garbage = await call('/api/v1/customer/profile', { token: 'not-a-jwt' });
    expect(garbage.status).toBe(401);
    expect(garbage.body.error.code).toBe('INVALID_TOKEN');

    const expired = await stack.mintToken('u-expired', {
      group: 'verified_customer',
      issuedAt: new Date(Date.now() - 2 * 3_600_000),
      expiresIn: 3600,
    });
    const response = await call('/api/v1/customer/profile', { token: expired });
    expect(response.status).toBe(401);
    expect(response.body.error.code).toBe('TOKEN_EXPIRED');
  });

  it('forwards a request with a valid token, and the upstream sees the verified uid on the rewritten path', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-123', { group: 'verified_customer', email: 'hanako@example.com' });
    const response = await call('/api/v1/customer/profile', { token });
    expect(response.status).toBe(200);
    const echo = response.echo;
    expect(echo.service).toBe('customer');
    expect(echo.path).toBe('/profile');
    expect(echo.headers['x-sekisho-user-id']).toBe('user-123');
    expect(echo.headers['x-sekisho-user-group']).toBe('verified_customer');
    expect(echo.headers['x-sekisho-user-email']).toBe('hanako@example.com');
  });

  it('answers 403 INSUFFICIENT_PERMISSIONS, naming the required permission, when the group lacks it', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-basic', { group: 'basic_customer' });
    const response = await call('/api/v1/customer/profile', { method: 'PUT', token, body: '{}' });
    expect(response.status).toBe(403);
    expect(response.body.error.code).toBe('INSUFFICIENT_PERMISSIONS');
    expect(response.body.error.required_permissions).toEqual(['update:own_profile']);
  });

  it('never lets a client-sent identity header reach the service', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-honest', { group: 'verified_customer' });
    const spoofed = {
      'x-sekisho-user-id': 'admin',
      'x-sekisho-user-group': 'premium_customer',
      'x-sekisho-user-permissions': 'redeem:rewards',
    };
    const authenticated = await call('/api/v1/customer/profile', { token, headers: spoofed });
    expect(authenticated.status).toBe(200);
    const seen = authenticated.echo.headers;
    expect(seen['x-sekisho-user-id']).toBe('user-honest');
    expect(seen['x-sekisho-user-group']).toBe('verified_customer');
    expect(seen['x-sekisho-user-permissions']).not.toContain('redeem:rewards');

    const anonymous = await call('/api/v1/auth/login', { method: 'POST', headers: spoofed, body: '{}' });
    expect(anonymous.status).toBe(200);
    const anonymousHeaders = anonymous.echo.headers;
    for (const name of Object.keys(spoofed)) expect(anonymousHeaders[name]).toBeUndefined();
  });

  it('answers 429 RATE_LIMIT_EXCEEDED with Retry-After once the route limit of the window is used up', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-busy', { group: 'verified_customer' });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      statuses.push((await call('/api/v1/appointments', { method: 'POST', token, body: '{}' })).status);
    }
    expect(statuses).toEqual([200, 200, 200]);
    const limited = await call('/api/v1/appointments', { method: 'POST', token, body: '{}' });
    expect(limited.status).toBe(429);
    expect(limited.body).toMatchObject({ success: false, error: { code: 'RATE_LIMIT_EXCEEDED' }, data: null });
    expect(limited.body.error.correlation_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);

    // The limit is per user: another user is not affected.
    const other = await stack.mintToken('user-calm', { group: 'verified_customer' });
    expect((await call('/api/v1/appointments', { method: 'POST', token: other, body: '{}' })).status).toBe(200);
  });

  it('blocks an IP for blockFor once an unauthenticated route limit is exceeded', async () => {
    showLogsOnFailure();
    const attempts: number[] = [];
    for (let i = 0; i < 2; i++)
      attempts.push((await call('/api/v1/password-reset', { method: 'POST', body: '{}' })).status);
    expect(attempts).toEqual([200, 200]);
    const blocked = await call('/api/v1/password-reset', { method: 'POST', body: '{}' });
    expect(blocked.status).toBe(429);
    expect(blocked.body.error.code).toBe('RATE_LIMIT_EXCEEDED');
    // The block (15 minutes), not the rest of the one-minute window, is what the client must wait.
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(60);
    expect(Number(blocked.headers.get('retry-after'))).toBeLessThanOrEqual(900);
    // A token does not lift an IP block on an anonymous route.
    const token = await stack.mintToken('user-same-ip', { group: 'basic_customer' });
    expect((await call('/api/v1/password-reset', { method: 'POST', token, body: '{}' })).status).toBe(429);
  });

  it('serves a route added to the definition within seconds, without restarting anything', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-new-route', { group: 'basic_customer' });
    expect((await call('/api/v1/appointments/mine', { token })).status).toBe(404);

    const routes = definition.routes as unknown[];
    definition = {
      ...definition,
      routes: [
        ...routes,
        {
          match: 'GET /api/v1/appointments/mine',
          to: 'appointment',
          rewrite: '/appointments',
          require: ['read:own_appointments'],
        },
      ],
    };
    await writeDefinition(definition);
    const response = await eventually(
      async () => {
        const r = await call('/api/v1/appointments/mine', { token });
        return r.status === 200 ? r : undefined;
      },
      15_000,
      'the new route being served',
    );
    expect(response.echo.service).toBe('appointment');
    expect(response.echo.path).toBe('/appointments');
  });

  it('refuses an invalid change, reports the field, and keeps serving the last good config', async () => {
    showLogsOnFailure();
    const before = await (await fetch(`${stack.controlPlaneAdminUrl}/status`)).text();
    const routes = definition.routes as unknown[];
    await writeDefinition({
      ...definition,
      routes: [...routes, { match: 'GET /api/v1/broken', to: 'no-such-service' }],
    });
    const status = await eventually(
      async () => {
        const text = await (await fetch(`${stack.controlPlaneAdminUrl}/status`)).text();
        return text !== before && text.includes('no-such-service') ? text : undefined;
      },
      15_000,
      'the control plane reporting the invalid definition',
    );
    expect(status).toContain(`routes[${routes.length}].to`);

    const token = await stack.mintToken('user-after-bad-change', { group: 'verified_customer' });
    expect((await call('/api/v1/customer/profile', { token })).status).toBe(200);
    expect((await call('/api/v1/appointments/mine', { token })).status).toBe(200);
    expect((await call('/api/v1/broken', { token })).status).toBe(404);
  });

  it('keeps serving when Redis goes down (rate-limit failure mode "allow") and limits again when it is back', async () => {
    showLogsOnFailure();
    const control = stack.redis.control;
    if (!control) throw new Error('this test needs a redis-server the stack started itself (unset REDIS_URL)');
    const token = await stack.mintToken('user-during-outage', { group: 'verified_customer' });
    await control.down();
    try {
      const during: number[] = [];
      for (let i = 0; i < 5; i++) {
        during.push((await call('/api/v1/appointments', { method: 'POST', token, body: '{}' })).status);
      }
      // The route allows 3 a minute; with Redis gone nothing is counted and nothing refused.
      expect(during).toEqual([200, 200, 200, 200, 200]);
    } finally {
      await control.up();
    }
    const after = await eventually(
      async () => {
        const statuses: number[] = [];
        for (let i = 0; i < 4; i++) {
          statuses.push((await call('/api/v1/appointments', { method: 'POST', token, body: '{}' })).status);
        }
        return statuses.at(-1) === 429 ? statuses : undefined;
      },
      15_000,
      'limits applying again after Redis came back',
    );
    expect(after.at(-1)).toBe(429);
  });

  it('fails closed with 503 SERVICE_UNAVAILABLE while ext-authz is down, and recovers when it is back', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-authz-outage', { group: 'verified_customer' });
    await stack.stopService('ext-authz');
    try {
      for (const response of [
        await call('/api/v1/customer/profile', { token }),
        await call('/api/v1/auth/login', { method: 'POST', body: '{}' }),
      ]) {
        expect(response.status).toBe(503);
        expect(response.body).toMatchObject({ success: false, error: { code: 'SERVICE_UNAVAILABLE' }, data: null });
        expect(response.body.error.correlation_id).toBe(response.headers.get('x-request-id'));
      }
    } finally {
      await stack.startService('ext-authz');
    }
    await eventually(
      async () => ((await call('/api/v1/customer/profile', { token })).status === 200 ? true : undefined),
      15_000,
      'requests being authorized again',
    );
  });

  it('keeps serving the last good configuration while the control plane is down', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-cp-outage', { group: 'verified_customer' });
    await stack.stopService('control-plane');
    try {
      // Envoy, ext-authz and the rate-limit service all keep what they were last given.
      const response = await call('/api/v1/customer/profile', { token });
      expect(response.status).toBe(200);
      expect(response.echo.headers['x-sekisho-user-id']).toBe('user-cp-outage');
      expect((await call('/api/v1/customer/profile')).body.error.code).toBe('MISSING_TOKEN');
    } finally {
      // The file still holds the invalid change of an earlier test, and a control plane
      // refuses to start from an invalid definition: restore the last good one first.
      await writeDefinition(definition);
      await stack.startService('control-plane');
    }
    // Envoy reconnects to the restarted control plane on its own.
    await eventually(
      async () => {
        const stats = await (await fetch(`${stack.envoyAdminUrl}/stats?filter=control_plane.connected_state`)).text();
        return /control_plane\.connected_state: 1/.test(stats) ? true : undefined;
      },
      30_000,
      'Envoy reconnecting to the control plane',
    );
    expect((await call('/api/v1/customer/profile', { token })).status).toBe(200);
  });
});
