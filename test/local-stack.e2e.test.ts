import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildServices, distEntry } from '@sekisho/devstack/build';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, type ManagedProcess, spawnProcess, waitUntil } from '@sekisho/devstack/processes';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { stringify } from 'yaml';

// `npm start` (devstack/src/cli/start.ts, run as the script runs it, on free ports and a
// definition of its own) and `npm run admin` with no connection options: the command finds
// the running stack's Redis through the file start.ts writes, and the file goes with the stack.
// npm start runs what production runs, so this is also the test of the compiled services:
// `npm run build`'s bundles in dist/, each started by plain node, without tsx.

let dir: string;
let stackFile: string;
let start: ManagedProcess;

beforeAll(async () => {
  // npm start's pre-step (npm run build), here so the test needs nothing built before it.
  await buildServices();
}, 300_000);

/** Runs start.ts as `npm start` does, on free ports, with `env` on top; resolves once it is running. */
async function startLocalStack(env: NodeJS.ProcessEnv = {}) {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-local-stack-'));
  stackFile = join(dir, 'local-stack.json');
  const [gateway, customer, extAuthz, rateLimit, threatDetector] = await Promise.all([
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
        firebase: { projectId: 'demo-sekisho-local' },
        groupClaim: 'tier',
        defaultGroup: 'basic_customer',
        groups: { basic_customer: ['read:own_profile'] },
        customerId: { claim: 'customer_id' },
      },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s' },
        threatDetector: { address: `127.0.0.1:${threatDetector}` },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
      routes: [{ match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] }],
      // The threat detector is one of the compiled services npm start runs.
      threats: {},
    }),
  );
  start = spawnProcess({
    name: 'npm start',
    command: process.execPath,
    args: ['--import', 'tsx', 'devstack/src/cli/start.ts'],
    cwd: repoRoot,
    env: {
      ...process.env,
      SEKISHO_DEFINITION: definitionFile,
      SEKISHO_LOCAL_STACK_FILE: stackFile,
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
      EXT_AUTHZ_ADMIN_PORT: '0',
      RATELIMIT_ADMIN_PORT: '0',
      THREAT_ADMIN_PORT: '0',
      ENVOY_ADMIN_PORT: '0',
      DEV_KEY_SERVER_PORT: '0',
      ...env,
    },
  });
  await waitUntil('npm start to say it is running', 120_000, { watch: [start] }, async () =>
    start.logs().includes('Sekisho is running.')
      ? { done: true, value: undefined }
      : { done: false, detail: 'starting' },
  );
}

async function stopLocalStack() {
  await start?.stop(15_000);
  if (dir) await rm(dir, { recursive: true, force: true });
}

function admin(...args: string[]) {
  const { FIREBASE_AUTH_EMULATOR_HOST: _a, GOOGLE_APPLICATION_CREDENTIALS: _b, ...env } = process.env;
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'ext-authz/src/admin/cli.ts', ...args],
      { cwd: repoRoot, env: { ...env, SEKISHO_LOCAL_STACK_FILE: stackFile }, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The command lines of `pid`'s child processes, from /proc. */
function childCommandLines(pid: number): string[][] {
  const lines: string[][] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The parent pid is the 2nd field after the parenthesised command name.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== pid) continue;
      lines.push(readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean));
    } catch {
      // The process ended while being read.
    }
  }
  return lines;
}

describe('npm start and npm run admin', () => {
  beforeAll(() => startLocalStack(), 150_000);
  afterAll(stopLocalStack);

  it('runs the compiled services with plain node, as production does', () => {
    const children = childCommandLines(start.pid);
    for (const service of ['control-plane', 'ext-authz', 'ratelimit-service', 'threat-detector'] as const) {
      const line = children.find((args) => args.includes(distEntry(service)));
      expect(line, `${service} among ${JSON.stringify(children)}`).toBeDefined();
      expect(line?.join(' ')).not.toContain('tsx');
    }
  });

  it('writes where its Redis is, and the admin command acts on it without options', async () => {
    onTestFailed(() => console.error(start.logs()));
    const info = JSON.parse(await readFile(stackFile, 'utf8'));
    expect(info).toMatchObject({
      pid: start.pid,
      redisUrl: expect.stringMatching(/^redis:\/\//),
      groupClaim: 'tier',
      customerIdClaim: 'customer_id',
    });

    const result = await admin('disable', 'dev-someone');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`(the local stack (pid ${start.pid}))`);

    // The stack's ext-authz applies it (its admin URL is in what npm start printed).
    const status = /ext-authz:\s+(http:\/\/\S+)\/status/.exec(start.logs())?.[1];
    expect(status).toBeDefined();
    await waitUntil('ext-authz to hold the change', 1_000, {}, async () => {
      const accounts = ((await (await fetch(`${status}/status`)).json()) as { accounts: { disabled: number } })
        .accounts;
      return accounts.disabled === 1
        ? { done: true, value: undefined }
        : { done: false, detail: JSON.stringify(accounts) };
    });
  });

  it('removes the file when it stops, and the admin command then says no stack runs', async () => {
    await start.stop(15_000);
    expect(start.exitInfo()?.code).toBe(0);
    expect(existsSync(stackFile)).toBe(false);
    const result = await admin('disable', 'dev-someone');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('no running local stack found');
  });
});

// `SEKISHO_AUTH_EMULATOR=true npm start`: the stack also runs the Firebase Auth emulator and
// ext-authz accepts its tokens, so a developer signs in through the emulator; `npm run admin`
// with no options then changes the emulator's user as well as Sekisho's state.
describe('npm start with the Auth emulator', () => {
  beforeAll(() => startLocalStack({ SEKISHO_AUTH_EMULATOR: 'true', AUTH_EMULATOR_PORT: '0' }), 150_000);
  afterAll(stopLocalStack);

  const printed = (pattern: RegExp) => {
    const found = pattern.exec(start.logs())?.[1];
    if (!found) throw new Error(`npm start did not print ${pattern}:\n${start.logs()}`);
    return found;
  };

  it('prints the emulator, signs a user in through it, and the gateway serves then refuses them', async () => {
    onTestFailed(() => console.error(start.logs()));
    const emulator = printed(/Firebase Auth emulator: (http:\/\/\S+)/);
    const gateway = printed(/Gateway:\s+(http:\/\/\S+)/);
    const info = JSON.parse(await readFile(stackFile, 'utf8'));
    expect(info).toMatchObject({ projectId: 'demo-sekisho-local', authEmulatorHost: new URL(emulator).host });

    const signedUp = (await (
      await fetch(`${emulator}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=any`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: 'dev@example.com', password: 'secret-123', returnSecureToken: true }),
      })
    ).json()) as { idToken: string; localId: string };
    const profile = () =>
      fetch(`${gateway}/api/v1/customer/profile`, { headers: { authorization: `Bearer ${signedUp.idToken}` } });
    expect((await profile()).status).toBe(200);

    const result = await admin('disable', signedUp.localId);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`Firebase (the local stack's Auth emulator at ${info.authEmulatorHost})`);
    await waitUntil('the gateway to refuse the disabled user', 1_000, {}, async () => {
      const response = await profile();
      return response.status === 401
        ? { done: true, value: undefined }
        : { done: false, detail: `status ${response.status}` };
    });
    const lookup = (await (
      await fetch(`${emulator}/identitytoolkit.googleapis.com/v1/projects/demo-sekisho-local/accounts:lookup`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer owner' },
        body: JSON.stringify({ localId: [signedUp.localId] }),
      })
    ).json()) as { users: Array<{ disabled?: boolean }> };
    expect(lookup.users[0]?.disabled).toBe(true);
  });
});
