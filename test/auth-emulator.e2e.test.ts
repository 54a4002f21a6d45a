import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, waitUntil } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { type App, deleteApp, initializeApp } from 'firebase-admin/app';
import { type Auth, getAuth } from 'firebase-admin/auth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// The gateway with the real Firebase Auth emulator (firebase-tools, started by devstack's
// stack with `authEmulator: true`, which also puts ext-authz in its emulator mode): a user
// created with firebase-admin signs in through the emulator's REST API, and the emulator's
// own unsigned ID token goes through a real Envoy. The group claim is set with firebase-admin
// and arrives with a refreshed token; `npm run admin` (Sekisho's state and, through
// firebase-admin, the emulator) revokes and disables, refused on the next request.

const projectId = 'demo-sekisho-emulator';
let stack: Stack;
let dir: string;
let firebase: App;
let auth: Auth;
let emulatorUrl: string;
const previousEmulatorHost = process.env.FIREBASE_AUTH_EMULATOR_HOST;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-emulator-e2e-'));
  const [gateway, customer, authz, rateLimit] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
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
          premium_customer: ['read:own_profile', 'read:premium'],
        },
      },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${authz}`, timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
      limits: {
        authenticated: [{ per: 'user', limit: 1000, window: '1m' }],
        unauthenticated: [{ per: 'ip', limit: 1000, window: '1m' }],
      },
      routes: [
        { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
        { match: 'GET /api/v1/premium', to: 'customer', rewrite: '/premium', require: ['read:premium'] },
      ],
    }),
  );
  stack = await startStack({ definitionFile, logLevel: 'info', authEmulator: true });
  const emulator = stack.authEmulator;
  if (!emulator) throw new Error('the stack started no Auth emulator');
  emulatorUrl = emulator.url;
  // firebase-admin talks to the emulator while this is set (read on every call).
  process.env.FIREBASE_AUTH_EMULATOR_HOST = emulator.host;
  firebase = initializeApp({ projectId }, 'sekisho-emulator-e2e');
  auth = getAuth(firebase);
});

afterAll(async () => {
  if (firebase) await deleteApp(firebase);
  if (previousEmulatorHost === undefined) delete process.env.FIREBASE_AUTH_EMULATOR_HOST;
  else process.env.FIREBASE_AUTH_EMULATOR_HOST = previousEmulatorHost;
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack);

interface Echo {
  path: string;
  headers: Record<string, string>;
}
async function call(path: string, token: string) {
  const response = await fetch(`${stack.gatewayUrl}${path}`, {
    headers: { authorization: `Bearer ${token}`, 'accept-language': 'en' },
  });
  const text = await response.text();
  const body = text.startsWith('{') ? JSON.parse(text) : text;
  return { status: response.status, body, echo: body as Echo };
}

/** The emulator's REST API, as a client SDK calls it. */
async function signIn(email: string, password = 'secret-123') {
  const response = await fetch(
    `${emulatorUrl}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=demo`,
    {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password, returnSecureToken: true }),
    },
  );
  return {
    status: response.status,
    ...((await response.json()) as { idToken?: string; refreshToken?: string; error?: { message: string } }),
  };
}

async function refresh(refreshToken: string): Promise<string> {
  const response = await fetch(`${emulatorUrl}/securetoken.googleapis.com/v1/token?key=demo`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString(),
  });
  const body = (await response.json()) as { id_token?: string; error?: { message: string } };
  if (!body.id_token) throw new Error(`the emulator refused the refresh: ${JSON.stringify(body)}`);
  return body.id_token;
}

const payloadOf = (token: string) =>
  JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>;
const headerOf = (token: string) =>
  JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as Record<string, unknown>;
/** An unsigned token in the emulator's shape with some claims changed: what anyone can write. */
const rewritten = (token: string, claims: Record<string, unknown>) => {
  const [header] = token.split('.');
  return `${header}.${Buffer.from(JSON.stringify({ ...payloadOf(token), ...claims })).toString('base64url')}.`;
};

/** `npm run admin` as a process, on the stack's Redis and, through firebase-admin, the emulator. */
function admin(...args: string[]) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [
        '--import',
        'tsx',
        'ext-authz/src/admin/cli.ts',
        ...args,
        '--redis-url',
        stack.redis.url,
        '--firebase-project',
        projectId,
        '--group-claim',
        'tier',
      ],
      {
        cwd: repoRoot,
        timeout: 30_000,
        env: { ...process.env, FIREBASE_AUTH_EMULATOR_HOST: stack.authEmulator?.host ?? '' },
      },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Runs the admin command and waits (a second at most) until ext-authz holds the change. */
async function change(...args: string[]): Promise<string> {
  const result = await admin(...args);
  expect(result.code, result.stderr).toBe(0);
  const version = Number(/state version (\d+)/.exec(result.stdout)?.[1]);
  expect(version).toBeGreaterThan(0);
  await waitUntil(`ext-authz at account state version ${version}`, 1_000, {}, async () => {
    const status = (await (await fetch(`${stack.extAuthzAdminUrl}/status`)).json()) as {
      accounts: { version: number };
    };
    return status.accounts.version >= version
      ? { done: true, value: undefined }
      : { done: false, detail: `version ${status.accounts.version}` };
  });
  return result.stdout;
}

/** Until the clock's second is past `seconds`, so a revocation now comes after that sign-in. */
async function secondAfter(seconds: number) {
  await waitUntil(`the clock past second ${seconds}`, 3_000, {}, async () =>
    Math.floor(Date.now() / 1000) > seconds ? { done: true, value: undefined } : { done: false, detail: 'not yet' },
  );
}

describe('the gateway with the Firebase Auth emulator', () => {
  const email = 'hana@example.com';
  let uid: string;
  let session: { idToken: string; refreshToken: string };

  it('runs ext-authz in the emulator mode and says so', async () => {
    showLogsOnFailure();
    const ready = await fetch(`${stack.extAuthzAdminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { details: unknown }).details).toMatchObject({
      auth_emulator: { enabled: true, host: stack.authEmulator?.host, accepts_unsigned_tokens: true },
    });
    expect(await (await fetch(`${stack.extAuthzAdminUrl}/metrics`)).text()).toMatch(
      /sekisho_ext_authz_emulator_mode\{[^}]*\} 1/,
    );
    expect(stack.logs()).toContain('AUTH EMULATOR MODE');
  });

  it("serves a user created with firebase-admin, signed in through the emulator's REST API", async () => {
    showLogsOnFailure();
    uid = (await auth.createUser({ email, password: 'secret-123', emailVerified: true })).uid;
    const signedIn = await signIn(email);
    expect(signedIn.status).toBe(200);
    if (!signedIn.idToken || !signedIn.refreshToken) throw new Error('no tokens from the emulator');
    session = { idToken: signedIn.idToken, refreshToken: signedIn.refreshToken };
    // Really the emulator's: unsigned.
    expect(headerOf(session.idToken).alg).toBe('none');
    expect(session.idToken.endsWith('.')).toBe(true);

    const response = await call('/api/v1/customer/profile', session.idToken);
    expect(response.status).toBe(200);
    expect(response.echo.path).toBe('/profile');
    expect(response.echo.headers['x-sekisho-user-id']).toBe(uid);
    expect(response.echo.headers['x-sekisho-user-group']).toBe('basic_customer');
    expect(response.echo.headers['x-sekisho-user-email']).toBe(email);
    expect((await call('/api/v1/premium', session.idToken)).status).toBe(403);
  });

  it('takes the group claim set with firebase-admin from the refreshed token', async () => {
    showLogsOnFailure();
    await auth.setCustomUserClaims(uid, { tier: 'premium_customer' });
    // The token in hand does not carry it yet.
    expect((await call('/api/v1/premium', session.idToken)).status).toBe(403);
    session.idToken = await refresh(session.refreshToken);
    expect(payloadOf(session.idToken).tier).toBe('premium_customer');
    const response = await call('/api/v1/premium', session.idToken);
    expect(response.status).toBe(200);
    expect(response.echo.headers['x-sekisho-user-group']).toBe('premium_customer');
  });

  it('still checks every claim of an unsigned token: another project, expired, wrong issuer', async () => {
    showLogsOnFailure();
    const now = Math.floor(Date.now() / 1000);
    const cases = [
      { claims: { aud: 'demo-other' }, code: 'INVALID_TOKEN' },
      { claims: { iss: 'https://securetoken.google.com/demo-other' }, code: 'INVALID_TOKEN' },
      { claims: { iat: now + 3600, auth_time: now + 3600 }, code: 'INVALID_TOKEN' },
      { claims: { sub: '' }, code: 'INVALID_TOKEN' },
      { claims: { exp: now - 60 }, code: 'TOKEN_EXPIRED' },
    ];
    for (const { claims, code } of cases) {
      const response = await call('/api/v1/customer/profile', rewritten(session.idToken, claims));
      expect(response.status, JSON.stringify(claims)).toBe(401);
      expect(response.body.error.code, JSON.stringify(claims)).toBe(code);
    }
    // Signed tokens still pass beside the emulator's.
    expect((await call('/api/v1/customer/profile', await stack.mintToken('signed-user'))).status).toBe(200);
  });

  it('revoke → 401 TOKEN_REVOKED on the next request, for a refreshed token too; a new sign-in served', async () => {
    showLogsOnFailure();
    await secondAfter(Number(payloadOf(session.idToken).auth_time));
    const stdout = await change('revoke', uid);
    expect(stdout).toContain('revoked its refresh tokens in Firebase');
    // Firebase's own revocation time agrees with the second Sekisho stored, give or take one.
    const validAfter = Date.parse((await auth.getUser(uid)).tokensValidAfterTime ?? '');
    expect(Math.abs(validAfter - Date.now())).toBeLessThan(30_000);

    const refused = await call('/api/v1/customer/profile', session.idToken);
    expect(refused.status).toBe(401);
    expect(refused.body.error.code).toBe('TOKEN_REVOKED');
    // The emulator still refreshes (it does not check validSince there); the new token keeps
    // the old auth_time, so Sekisho refuses it all the same.
    const refreshed = await refresh(session.refreshToken);
    expect(payloadOf(refreshed).auth_time).toBe(payloadOf(session.idToken).auth_time);
    expect((await call('/api/v1/customer/profile', refreshed)).body.error.code).toBe('TOKEN_REVOKED');

    const again = await signIn(email);
    if (!again.idToken || !again.refreshToken) throw new Error('no tokens from the emulator');
    session = { idToken: again.idToken, refreshToken: again.refreshToken };
    expect((await call('/api/v1/customer/profile', session.idToken)).status).toBe(200);
  });

  it('disable → 401 USER_INACTIVE on the next request and the emulator refuses the sign-in; enable → served', async () => {
    showLogsOnFailure();
    const stdout = await change('disable', uid);
    expect(stdout).toContain('disabled the user in Firebase');
    expect((await auth.getUser(uid)).disabled).toBe(true);

    const refused = await call('/api/v1/customer/profile', session.idToken);
    expect(refused.status).toBe(401);
    expect(refused.body.error.code).toBe('USER_INACTIVE');
    expect((await signIn(email)).error?.message).toBe('USER_DISABLED');

    await change('enable', uid);
    expect((await auth.getUser(uid)).disabled).toBe(false);
    expect((await call('/api/v1/customer/profile', session.idToken)).status).toBe(200);
  });
});
