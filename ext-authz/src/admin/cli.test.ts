import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAccountState } from '../accounts/redis-store';

// `npm run admin` as a process: exit codes, messages, and finding the Redis of a running
// local stack through the file `npm start` writes.

let redis: RedisHandle;
let reader: Redis;
let dir: string;
let stackFile: string;
const prefix = `test:${randomUUID()}`;

beforeAll(async () => {
  redis = await startRedis();
  reader = new Redis(redis.url);
  dir = await mkdtemp(join(tmpdir(), 'sekisho-admin-'));
  stackFile = join(dir, 'local-stack.json');
  // A "running stack": this test process stands in for npm start's.
  await writeFile(stackFile, JSON.stringify({ pid: process.pid, redisUrl: redis.url }));
});

afterAll(async () => {
  reader?.disconnect();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

function admin(args: string[], env: NodeJS.ProcessEnv = {}) {
  const { FIREBASE_AUTH_EMULATOR_HOST: _a, GOOGLE_APPLICATION_CREDENTIALS: _b, ...base } = process.env;
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'ext-authz/src/admin/cli.ts', ...args],
      { cwd: repoRoot, env: { ...base, SEKISHO_LOCAL_STACK_FILE: stackFile, ...env }, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('npm run admin', () => {
  it('prints its usage with --help and exits 0', async () => {
    const result = await admin(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('usage: npm run admin -- <command> <uid>');
    expect(result.stdout).toContain('set-customer-id');
  });

  it.each([
    { args: [], message: 'no command given' },
    { args: ['promote', 'alice'], message: 'unknown command "promote"' },
    { args: ['disable'], message: 'disable: a uid is required' },
    { args: ['disable', 'alice', 'now'], message: 'disable takes no value' },
    { args: ['set-group', 'alice'], message: 'set-group: a value is required' },
    { args: ['set-group', 'alice', 'vip', 'extra'], message: 'unexpected arguments' },
    { args: ['revoke', 'a\nb'], message: 'the uid must be 1-128 characters' },
    { args: ['disable', 'alice', '--redis-url', 'http://x'], message: '--redis-url must be redis://' },
    { args: ['disable', 'alice', '--verbose'], message: "Unknown option '--verbose'" },
    { args: ['enable', 'alice', '--clear'], message: '--clear is for set-group and set-customer-id' },
  ])('exits 2 for $args', async ({ args, message }) => {
    const result = await admin(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(result.stderr).toContain('usage:');
  });

  it('acts on the running local stack without connection options, and says Firebase was not touched', async () => {
    const result = await admin(['disable', 'alice', '--key-prefix', prefix]);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toContain('disabled alice: every request is refused with USER_INACTIVE');
    expect(result.stdout).toContain(`the local stack (pid ${process.pid})`);
    expect(result.stdout).toContain("Firebase not configured: updated Sekisho's state only");
    expect((await readAccountState(reader, prefix)).table.get('alice')).toEqual({ disabled: true });
  });

  it('revokes at the current second, sets and clears overrides, enables, and shows the state', async () => {
    const before = Math.floor(Date.now() / 1000);
    expect((await admin(['revoke', 'bob', '--redis-url', redis.url, '--key-prefix', prefix])).code).toBe(0);
    expect((await admin(['disable', 'bob', '--key-prefix', prefix])).code).toBe(0);
    expect((await admin(['enable', 'bob', '--key-prefix', prefix])).code).toBe(0);
    expect((await admin(['set-group', 'bob', 'premium_customer', '--key-prefix', prefix])).code).toBe(0);
    expect((await admin(['set-customer-id', 'bob', 'c-7', '--key-prefix', prefix])).code).toBe(0);
    expect((await admin(['set-customer-id', 'bob', '--clear', '--key-prefix', prefix])).code).toBe(0);
    const shown = await admin(['show', 'bob', '--key-prefix', prefix]);
    expect(shown.code).toBe(0);
    const state = JSON.parse(shown.stdout);
    expect(state).toMatchObject({ uid: 'bob', group: 'premium_customer' });
    expect(state.validAfter).toBeGreaterThanOrEqual(before);
    expect(state.validAfter).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    expect(state).not.toHaveProperty('disabled');
    expect(state).not.toHaveProperty('customerId');
  });

  it('says when Firebase credentials are set that it did not call firebase-admin', async () => {
    const result = await admin(['disable', 'carol', '--key-prefix', prefix], {
      FIREBASE_AUTH_EMULATOR_HOST: '127.0.0.1:9099',
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('FIREBASE_AUTH_EMULATOR_HOST=127.0.0.1:9099');
    expect(result.stdout).toContain("updated Sekisho's state only");
  });

  it('exits 1 naming the way out when no local stack runs', async () => {
    const missing = await admin(['disable', 'alice'], { SEKISHO_LOCAL_STACK_FILE: join(dir, 'none.json') });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no running local stack found .*npm start.*--redis-url/);

    const stale = join(dir, 'stale.json');
    // A pid that cannot be running (above Linux's pid_max).
    await writeFile(stale, JSON.stringify({ pid: 2 ** 30, redisUrl: redis.url }));
    const dead = await admin(['disable', 'alice'], { SEKISHO_LOCAL_STACK_FILE: stale });
    expect(dead.code).toBe(1);
    expect(dead.stderr).toContain(`(pid ${2 ** 30}) is not running`);
  });

  it('exits 1 when Redis cannot be reached, without printing a password', async () => {
    const port = await freePort();
    const result = await admin(['disable', 'alice', '--redis-url', `redis://:s3cret@127.0.0.1:${port}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot reach Redis at redis://***@127.0.0.1:${port} (from --redis-url)`);
    expect(result.stderr).not.toContain('s3cret');
  });
});
