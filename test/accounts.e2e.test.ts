import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, waitUntil } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// Disabled accounts and revoked sessions through the whole stack: a real Envoy balancing
// over TWO ext-authz replicas that share the stack's Redis, changed by `npm run admin` as
// a process. Each change must reach both replicas within a second.

let stack: Stack;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-accounts-e2e-'));
  const [gateway, customer, authzA, authzB, rateLimit] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(
    definitionFile,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: gateway } },
      identity: {
        firebase: { projectId: 'demo-sekisho-accounts' },
        groupClaim: 'tier',
        defaultGroup: 'basic_customer',
        groups: { basic_customer: ['read:own_profile'] },
      },
      policyServices: {
        extAuthz: { addresses: [`127.0.0.1:${authzA}`, `127.0.0.1:${authzB}`], timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
      limits: {
        authenticated: [{ per: 'user', limit: 1000, window: '1m' }],
        unauthenticated: [{ per: 'ip', limit: 1000, window: '1m' }],
      },
      routes: [
        { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
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

function admin(...args: string[]) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'ext-authz/src/admin/cli.ts', ...args, '--redis-url', stack.redis.url],
      { cwd: repoRoot, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Runs the admin command and returns the state version it wrote. */
async function change(...args: string[]): Promise<number> {
  const result = await admin(...args);
  expect(result.code, result.stderr).toBe(0);
  const version = Number(/state version (\d+)/.exec(result.stdout)?.[1]);
  expect(version).toBeGreaterThan(0);
  return version;
}

interface Accounts {
  enabled: boolean;
  loaded: boolean;
  subscribed: boolean;
  version: number;
}
const statusOf = async (url: string) => (await (await fetch(`${url}/status`)).json()) as { accounts: Accounts };
const readyzOf = async (url: string) => {
  const response = await fetch(`${url}/readyz`);
  return { code: response.status, ...((await response.json()) as { status: string; details: { accounts: Accounts } }) };
};

/** Both replicas hold at least this version: the deadline is the "within a second". */
async function everyReplicaAt(version: number, timeoutMs = 1_000) {
  await waitUntil(`every ext-authz replica at account state version ${version}`, timeoutMs, {}, async () => {
    const versions = await Promise.all(
      stack.extAuthzAdminUrls.map(async (url) => (await statusOf(url)).accounts.version),
    );
    return versions.every((v) => v >= version)
      ? { done: true, value: undefined }
      : { done: false, detail: `versions ${versions.join(', ')}` };
  });
}

async function call(token: string) {
  const response = await fetch(`${stack.gatewayUrl}/api/v1/customer/profile`, {
    headers: { authorization: `Bearer ${token}`, 'accept-language': 'en' },
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text.startsWith('{') ? JSON.parse(text) : text };
}

const checks = async (url: string, code: string) => {
  const metrics = await (await fetch(`${url}/metrics`)).text();
  return Number(
    new RegExp(`sekisho_ext_authz_checks_total\\{[^}]*code="${code}"[^}]*\\} (\\d+)`).exec(metrics)?.[1] ?? 0,
  );
};

/**
 * Sends requests until each replica has answered one with `code` (Envoy balances round
 * robin, per worker), at most 30; every answer must be `status`.
 */
async function everyReplicaAnswers(token: string, status: number, code: string) {
  const before = await Promise.all(stack.extAuthzAdminUrls.map((url) => checks(url, code)));
  for (let i = 0; i < 30; i++) {
    const response = await call(token);
    expect(response.status).toBe(status);
    if (status !== 200) expect(response.body.error.code).toBe(code);
    const after = await Promise.all(stack.extAuthzAdminUrls.map((url) => checks(url, code)));
    if (after.every((n, r) => n > (before[r] ?? 0))) return;
  }
  throw new Error(`not every replica answered ${code} in 30 requests`);
}

describe('accounts through Envoy and two ext-authz replicas', () => {
  it('runs two replicas that both loaded the account state from the stack Redis', async () => {
    showLogsOnFailure();
    expect(stack.extAuthzAdminUrls).toHaveLength(2);
    for (const url of stack.extAuthzAdminUrls) {
      const ready = await readyzOf(url);
      expect(ready).toMatchObject({
        status: 'ready',
        details: { accounts: { enabled: true, loaded: true, subscribed: true } },
      });
    }
  });

  it('revoke → 401 TOKEN_REVOKED on every replica within a second, and a sign-in after it is served', async () => {
    showLogsOnFailure();
    const uid = 'u-revoked';
    const old = await stack.mintToken(uid, { authTime: new Date(Date.now() - 60_000) });
    expect((await call(old)).status).toBe(200);

    await everyReplicaAt(await change('revoke', uid));
    await everyReplicaAnswers(old, 401, 'TOKEN_REVOKED');
    const refused = await call(old);
    expect(refused.body.error.message).toBe('The access token was revoked. Please sign in again.');
    expect(refused.headers.get('www-authenticate')).toBe(
      'Bearer realm="sekisho", error="invalid_token", error_description="The access token was revoked; sign in again"',
    );

    // A fresh sign-in (auth_time at or after the revocation second) passes.
    const fresh = await stack.mintToken(uid, { authTime: new Date(Date.now() + 1_000), issuedAt: new Date() });
    expect((await call(fresh)).status).toBe(200);
  });

  it('disable → 401 USER_INACTIVE on every replica, enable → served again', async () => {
    showLogsOnFailure();
    const uid = 'u-disabled';
    const token = await stack.mintToken(uid);
    expect((await call(token)).status).toBe(200);

    await everyReplicaAt(await change('disable', uid));
    await everyReplicaAnswers(token, 401, 'USER_INACTIVE');
    expect((await call(token)).body.error.message).toBe('The account is inactive.');

    await everyReplicaAt(await change('enable', uid));
    await everyReplicaAnswers(token, 200, 'OK');
  });

  it('a replica that lost Redis keeps deciding from its last state, says so, and resubscribes when Redis is back', async () => {
    showLogsOnFailure();
    const control = stack.redis.control;
    if (!control) throw new Error(`no outage controls for a Redis from ${stack.redis.source} (unset REDIS_URL)`);
    const disabled = await stack.mintToken('u-held');
    const other = await stack.mintToken('u-other');
    await everyReplicaAt(await change('disable', 'u-held'));

    await control.down();
    try {
      for (const url of stack.extAuthzAdminUrls) {
        await waitUntil('the replica to notice', 10_000, {}, async () => {
          const body = await readyzOf(url);
          return body.code === 200 && body.details.accounts.subscribed === false
            ? { done: true, value: undefined }
            : { done: false, detail: JSON.stringify(body) };
        });
        expect(await (await fetch(`${url}/metrics`)).text()).toMatch(
          /sekisho_ext_authz_accounts_subscribed\{[^}]*\} 0/,
        );
      }
      await everyReplicaAnswers(disabled, 401, 'USER_INACTIVE');
      expect((await call(other)).status).toBe(200);
    } finally {
      await control.up();
    }
    for (const url of stack.extAuthzAdminUrls) {
      await waitUntil('the replica to resubscribe', 15_000, {}, async () =>
        (await readyzOf(url)).details.accounts.subscribed === true
          ? { done: true, value: undefined }
          : { done: false, detail: 'not yet' },
      );
    }
    // The restarted Redis is empty (no persistence): the resync installed that, and changes flow again.
    await everyReplicaAt(await change('disable', 'u-other'));
    await everyReplicaAnswers(other, 401, 'USER_INACTIVE');
  });
});
