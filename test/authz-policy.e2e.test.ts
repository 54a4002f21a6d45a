import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// Who may call, through the whole stack (devstack's startStack: a real Envoy configured over
// ADS, the real ext-authz and rate-limit processes, Redis, real RS256 tokens): strict group
// claims, sign-in providers and tenants, the RFC 6750 challenges, and auth: optional.

interface Echo {
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
    refresh_required?: boolean;
    reason?: string;
  };
  data: null;
}

const projectId = 'demo-sekisho-authz';
// Requests without a token (and refused tokens) per IP per minute, all of this file's
// included: the last test runs into it on the optional route.
const anonymousLimit = 40;

let stack: Stack;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-authz-e2e-'));
  const [gateway, customer, extAuthz, rateLimit] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(
    definitionFile,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: gateway } },
      identity: {
        firebase: { projectId },
        groupClaim: 'tier',
        defaultGroup: 'basic_customer',
        groups: {
          basic_customer: ['read:own_profile'],
          verified_customer: { inherits: 'basic_customer', adds: ['update:own_profile'] },
        },
        tenants: ['salon-a'],
        customerId: { claim: 'customer_id' },
      },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'deny' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
      limits: {
        authenticated: [{ per: 'user', limit: 1000, window: '1m' }],
        unauthenticated: [{ per: 'ip', limit: anonymousLimit, window: '1m' }],
      },
      routes: [
        { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
        { match: 'GET /api/v1/menu', to: 'customer', rewrite: '/menu', auth: 'optional' },
        {
          match: 'GET /api/v1/customer/settings',
          to: 'customer',
          rewrite: '/settings',
          require: ['update:own_profile'],
          dryRun: true,
        },
        {
          match: { methods: ['GET'], template: '/api/v1/customers/{id}' },
          to: 'customer',
          rewrite: '/customers/{id}',
          require: ['read:own_profile'],
          owner: { param: 'id' },
        },
      ],
    }),
  );
  stack = await startStack({ definitionFile, logLevel: 'info' });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack);

async function call(
  path: string,
  opts: { token?: string; authorization?: string; headers?: Record<string, string> } = {},
) {
  const headers = new Headers(opts.headers);
  if (opts.token !== undefined) headers.set('authorization', `Bearer ${opts.token}`);
  if (opts.authorization !== undefined) headers.set('authorization', opts.authorization);
  const response = await fetch(`${stack.gatewayUrl}${path}`, { headers });
  const text = await response.text();
  const json = text.startsWith('{') ? JSON.parse(text) : undefined;
  return { status: response.status, headers: response.headers, body: json as ErrorJson, echo: json as Echo };
}

describe('group claims are strict', () => {
  it('gives a token without the claim the default group', async () => {
    showLogsOnFailure();
    const response = await call('/api/v1/customer/profile', { token: await stack.mintToken('u-plain') });
    expect(response.status).toBe(200);
    expect(response.echo.headers['x-sekisho-user-group']).toBe('basic_customer');
  });

  it.each([
    ['an array', ['verified_customer']],
    ['an object', { name: 'basic_customer' }],
    ['an empty string', ''],
    ['a number', 1],
    ['an unknown name', 'platinum'],
  ])('refuses %s group claim with 403 rather than falling back to the default group', async (_name, claim) => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-odd-claim', { claims: { tier: claim } });
    const response = await call('/api/v1/customer/profile', { token });
    expect(response.status).toBe(403);
    expect(response.body.error.code).toBe('INSUFFICIENT_PERMISSIONS');
    expect(response.headers.get('www-authenticate')).toBe('Bearer realm="sekisho", error="insufficient_scope"');
  });
});

describe('sign-in providers and tenants', () => {
  it('refuses an anonymous sign-in with 401 INVALID_TOKEN', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-anon', { signInProvider: 'anonymous' });
    const response = await call('/api/v1/customer/profile', { token });
    expect(response.status).toBe(401);
    expect(response.body.error.code).toBe('INVALID_TOKEN');
  });

  it('accepts the configured tenant and refuses any other', async () => {
    showLogsOnFailure();
    const tenantToken = (tenant: string) =>
      stack.mintToken(`u-${tenant}`, {
        claims: { firebase: { sign_in_provider: 'password', tenant, identities: {} } },
      });
    const ours = await call('/api/v1/customer/profile', { token: await tenantToken('salon-a') });
    expect(ours.status).toBe(200);
    expect(ours.echo.headers['x-sekisho-user-id']).toBe('u-salon-a');
    const theirs = await call('/api/v1/customer/profile', { token: await tenantToken('salon-b') });
    expect(theirs.status).toBe(401);
    expect(theirs.body.error.code).toBe('INVALID_TOKEN');
  });
});

describe('401 challenges (RFC 6750)', () => {
  it('answers a request without a token with a challenge without an error', async () => {
    showLogsOnFailure();
    const response = await call('/api/v1/customer/profile');
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe('Bearer realm="sekisho"');
  });

  it('answers a bad token with invalid_token', async () => {
    showLogsOnFailure();
    const response = await call('/api/v1/customer/profile', { token: 'not-a-jwt' });
    expect(response.headers.get('www-authenticate')).toBe(
      'Bearer realm="sekisho", error="invalid_token", error_description="The access token is invalid"',
    );
    expect(response.body.error.refresh_required).toBeUndefined();
  });

  it('tells the app to refresh an expired token, keeping the fixed body fields', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-expired', { issuedAt: new Date(Date.now() - 2 * 3_600_000) });
    const response = await call('/api/v1/customer/profile', { token });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(
      'Bearer realm="sekisho", error="invalid_token", error_description="The access token expired; refresh it and retry"',
    );
    expect(response.body).toMatchObject({
      success: false,
      error: { code: 'TOKEN_EXPIRED', refresh_required: true },
      data: null,
    });
    expect(Object.keys(response.body.error).sort()).toEqual(
      ['code', 'correlation_id', 'message', 'refresh_required', 'timestamp'].sort(),
    );
  });
});

describe('ownership', () => {
  it('serves a customer its own record', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-c42', { claims: { customer_id: 'c-42' } });
    const response = await call('/api/v1/customers/c-42', { token });
    expect(response.status).toBe(200);
    expect(response.echo.path).toBe('/customers/c-42');
    expect(response.echo.headers['x-sekisho-user-id']).toBe('u-c42');
  });

  it.each([
    ['another customer id', '/api/v1/customers/c-43', { customer_id: 'c-42' }],
    ['an id that only starts with its own', '/api/v1/customers/c-42x', { customer_id: 'c-42' }],
    ['a token without the customer id claim', '/api/v1/customers/c-42', {}],
  ])('refuses %s with 403 not_owner', async (_name, path, claims) => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-other', { claims });
    const response = await call(path, { token });
    expect(response.status).toBe(403);
    expect(response.body.error).toMatchObject({ code: 'INSUFFICIENT_PERMISSIONS', reason: 'not_owner' });
  });
});

describe('dry-run', () => {
  async function dryRunCount(): Promise<number> {
    const text = await (await fetch(`${stack.extAuthzAdminUrl}/metrics`)).text();
    const line = text
      .split('\n')
      .find((l) => l.startsWith('sekisho_ext_authz_checks_total{') && l.includes('result="dry_run"'));
    return line === undefined ? 0 : Number(line.split(' ').pop());
  }

  it('lets a caller without the permission through, marked for the upstream, and counts it', async () => {
    showLogsOnFailure();
    const before = await dryRunCount();
    const token = await stack.mintToken('u-dry', { group: 'basic_customer' });
    const response = await call('/api/v1/customer/settings', { token });
    expect(response.status).toBe(200);
    expect(response.echo.path).toBe('/settings');
    expect(response.echo.headers['x-sekisho-user-id']).toBe('u-dry');
    expect(response.echo.headers['x-sekisho-dry-run-denied']).toBe('INSUFFICIENT_PERMISSIONS');
    expect(await dryRunCount()).toBe(before + 1);
  });

  it('marks nothing for a caller with the permission, and removes a client-sent mark', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-dry-ok', { group: 'verified_customer' });
    const response = await call('/api/v1/customer/settings', {
      token,
      headers: { 'x-sekisho-dry-run-denied': 'forged' },
    });
    expect(response.status).toBe(200);
    expect(response.echo.headers['x-sekisho-dry-run-denied']).toBeUndefined();
  });

  it('still refuses a request without a token', async () => {
    showLogsOnFailure();
    const response = await call('/api/v1/customer/settings');
    expect(response.status).toBe(401);
    expect(response.body.error.code).toBe('MISSING_TOKEN');
  });
});

describe('auth: optional', () => {
  it('lets a caller without a token through anonymously, without any identity header', async () => {
    showLogsOnFailure();
    const response = await call('/api/v1/menu', { headers: { 'x-sekisho-user-id': 'admin' } });
    expect(response.status).toBe(200);
    expect(response.echo.path).toBe('/menu');
    expect(Object.keys(response.echo.headers).filter((name) => name.startsWith('x-sekisho-'))).toEqual([]);
  });

  it('sets the identity headers for a valid token', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-menu', { group: 'verified_customer' });
    const response = await call('/api/v1/menu', { token });
    expect(response.status).toBe(200);
    expect(response.echo.headers['x-sekisho-user-id']).toBe('u-menu');
    expect(response.echo.headers['x-sekisho-user-group']).toBe('verified_customer');
  });

  it.each([
    ['a forged token', { token: 'not-a-jwt' }, 'INVALID_TOKEN'],
    ['a Basic header', { authorization: 'Basic dXNlcjpwYXNz' }, 'MISSING_TOKEN'],
  ])('refuses %s instead of ignoring it', async (_name, opts, code) => {
    showLogsOnFailure();
    const response = await call('/api/v1/menu', opts);
    expect(response.status).toBe(401);
    expect(response.body.error.code).toBe(code);
  });

  it('counts anonymous callers by the anonymous per-IP limit, and signed-in ones not', async () => {
    showLogsOnFailure();
    let limited: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i <= anonymousLimit && !limited; i++) {
      const response = await call('/api/v1/menu');
      if (response.status === 429) limited = response;
      else expect(response.status).toBe(200);
    }
    expect(limited?.body.error.code).toBe('RATE_LIMIT_EXCEEDED');
    const signedIn = await call('/api/v1/menu', { token: await stack.mintToken('u-after-limit') });
    expect(signedIn.status).toBe(200);
  });
});
