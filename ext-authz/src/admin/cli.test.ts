import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AuthEmulator, startAuthEmulator } from '@sekisho/devstack/firebase-emulator';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort } from '@sekisho/devstack/processes';
import { type RedisHandle, redisCli, startRedis, startRedisSentinel } from '@sekisho/devstack/redis';
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
    { args: ['unblock-ip', 'alice'], message: 'unblock-ip: "alice" is not an IP address' },
    { args: ['trust-device', 'alice'], message: 'trust-device: the device id must be 16-256 visible ASCII' },
    { args: ['trust-device', 'alice', 'short'], message: 'trust-device: the device id must be 16-256 visible ASCII' },
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
    const revoked = await admin(['revoke', 'bob', '--redis-url', redis.url, '--key-prefix', prefix]);
    expect(revoked.code).toBe(0);
    // Without Firebase the user's sessions still refresh: the entry is all that refuses them.
    expect(revoked.stdout).toContain('This revocation is never pruned');
    expect(await reader.zcard(`${prefix}:revocations_in_firebase`)).toBe(0);
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

  it('exits 1 when the configured Firebase cannot be reached, after updating Sekisho', async () => {
    const port = await freePort();
    const result = await admin(['disable', 'carol', '--key-prefix', prefix, '--firebase-project', 'demo-x'], {
      FIREBASE_AUTH_EMULATOR_HOST: `127.0.0.1:${port}`,
    });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('disabled carol');
    expect(result.stderr).toContain(
      `updated Sekisho's state, but Firebase (the Auth emulator at 127.0.0.1:${port}) refused the change`,
    );
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

// The Firebase side against the real Auth emulator (firebase-tools, in-process): the same
// command updates Sekisho's state and, through firebase-admin, the user in Firebase.
interface EmulatorUser {
  disabled?: boolean;
  validSince?: string;
  customAttributes?: string;
}
interface IdentityReply {
  localId?: string;
  users?: EmulatorUser[];
  error?: { message: string };
}

describe('npm run admin with the Firebase Auth emulator', () => {
  let emulator: AuthEmulator;
  const projectId = 'demo-sekisho-admin';
  const identity = (path: string, body: unknown) =>
    fetch(`${emulator.url}/identitytoolkit.googleapis.com/v1/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer owner' },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as IdentityReply }));
  const lookup = async (uid: string): Promise<EmulatorUser> => {
    const user = (await identity(`projects/${projectId}/accounts:lookup`, { localId: [uid] })).body.users?.[0];
    if (!user) throw new Error(`the emulator has no user ${uid}`);
    return user;
  };
  const signIn = (email: string) =>
    identity('accounts:signInWithPassword?key=demo', { email, password: 'secret-123', returnSecureToken: true });
  const firebaseEnv = () => ({ FIREBASE_AUTH_EMULATOR_HOST: emulator.host });
  const options = () => ['--firebase-project', projectId, '--key-prefix', prefix];

  beforeAll(async () => {
    emulator = await startAuthEmulator({ projectId });
  }, 60_000);

  afterAll(async () => {
    await emulator?.stop();
  });

  async function signUp(email: string): Promise<string> {
    const created = await identity('accounts:signUp?key=demo', {
      email,
      password: 'secret-123',
      returnSecureToken: true,
    });
    expect(created.status).toBe(200);
    return created.body.localId as string;
  }

  it('disables and enables the user in Firebase too: its sign-in is refused, then works again', async () => {
    const uid = await signUp('dana@example.com');
    const disabled = await admin(['disable', uid, ...options()], firebaseEnv());
    expect(disabled, disabled.stderr).toMatchObject({ code: 0 });
    expect(disabled.stdout).toContain(
      `Firebase (the Auth emulator at ${emulator.host}): disabled the user in Firebase`,
    );
    expect((await lookup(uid)).disabled).toBe(true);
    expect((await signIn('dana@example.com')).body.error?.message).toBe('USER_DISABLED');
    expect((await readAccountState(reader, prefix)).table.get(uid)).toEqual({ disabled: true });

    expect((await admin(['enable', uid, ...options()], firebaseEnv())).code).toBe(0);
    expect((await lookup(uid)).disabled).toBeFalsy();
    expect((await signIn('dana@example.com')).status).toBe(200);
  });

  it('revokes the refresh tokens in Firebase at the second Sekisho stores', async () => {
    const uid = await signUp('eve@example.com');
    const result = await admin(['revoke', uid, ...options()], firebaseEnv());
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('revoked its refresh tokens in Firebase');
    expect(result.stdout).toContain('ext-authz removes it from Sekisho');
    const validSince = Number((await lookup(uid)).validSince);
    const stored = (await readAccountState(reader, prefix)).table.get(uid)?.validAfter ?? 0;
    // Both are "now" in whole seconds, taken a moment apart.
    expect(Math.abs(validSince - stored)).toBeLessThanOrEqual(2);
    // Marked prunable, at a second no earlier than Firebase's own.
    const score = await reader.zscore(`${prefix}:revocations_in_firebase`, `${stored}:${uid}`);
    expect(Number(score)).toBeGreaterThanOrEqual(validSince);
    expect(Number(score) - validSince).toBeLessThanOrEqual(2);
  });

  it('sets and clears the group and customer id claims, keeping the user’s other claims', async () => {
    const uid = await signUp('frank@example.com');
    await identity(`projects/${projectId}/accounts:update`, { localId: uid, customAttributes: '{"plan":"gold"}' });
    const claims = ['--group-claim', 'tier', '--customer-id-claim', 'customer_id'];
    expect((await admin(['set-group', uid, 'premium_customer', ...options(), ...claims], firebaseEnv())).code).toBe(0);
    expect((await admin(['set-customer-id', uid, 'c-77', ...options(), ...claims], firebaseEnv())).code).toBe(0);
    expect(JSON.parse((await lookup(uid)).customAttributes ?? '{}')).toEqual({
      plan: 'gold',
      tier: 'premium_customer',
      customer_id: 'c-77',
    });
    expect((await admin(['set-customer-id', uid, '--clear', ...options(), ...claims], firebaseEnv())).code).toBe(0);
    expect(JSON.parse((await lookup(uid)).customAttributes ?? '{}')).toEqual({
      plan: 'gold',
      tier: 'premium_customer',
    });
    expect((await readAccountState(reader, prefix)).table.get(uid)).toEqual({ group: 'premium_customer' });
  });

  it('takes the claim names from the local stack, and fails with 1 without them', async () => {
    const uid = await signUp('grace@example.com');
    const withClaims = join(dir, 'claims-stack.json');
    await writeFile(withClaims, JSON.stringify({ pid: process.pid, redisUrl: redis.url, groupClaim: 'tier' }));
    const found = await admin(['set-group', uid, 'vip', ...options()], {
      ...firebaseEnv(),
      SEKISHO_LOCAL_STACK_FILE: withClaims,
    });
    expect(found.code, found.stderr).toBe(0);
    expect(JSON.parse((await lookup(uid)).customAttributes ?? '{}')).toEqual({ tier: 'vip' });

    const missing = await admin(['set-customer-id', uid, 'c-1', ...options()], firebaseEnv());
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("updated Sekisho's state, but Firebase");
    expect(missing.stderr).toContain('pass --customer-id-claim');
  });

  it('exits 1 naming Firebase when it does not know the uid (Sekisho is updated all the same)', async () => {
    const result = await admin(['disable', 'nobody-here', ...options()], firebaseEnv());
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /updated Sekisho's state, but Firebase \(the Auth emulator at [^)]+\) refused the change: .*no user record/i,
    );
    expect((await readAccountState(reader, prefix)).table.get('nobody-here')).toEqual({ disabled: true });
  });

  it('lifts a threat block with unblock-ip and unblock-user, and says when there was none', async () => {
    const threats = `test:${randomUUID()}`;
    const until = Date.now() + 3_600_000;
    await reader.zadd(`${threats}:blocks:index`, until, 'ip:198.51.100.7', until, 'limit:bob');
    await reader.hset(
      `${threats}:blocks:records`,
      'ip:198.51.100.7',
      JSON.stringify({ kind: 'ip', subject: '198.51.100.7', rule: 'brute_force', severity: 'high', untilMs: until }),
    );
    const ip = await admin(['unblock-ip', '198.51.100.7', '--threats-key-prefix', threats]);
    expect(ip).toMatchObject({ code: 0, stderr: '' });
    expect(ip.stdout).toContain('lifted ip:198.51.100.7');
    expect(await reader.zrange(`${threats}:blocks:index`, 0, -1)).toEqual(['limit:bob']);
    expect(await reader.hgetall(`${threats}:blocks:records`)).toEqual({});
    const user = await admin(['unblock-user', 'bob', '--threats-key-prefix', threats]);
    expect(user.stdout).toContain('lifted limit:bob');
    const again = await admin(['unblock-user', 'bob', '--threats-key-prefix', threats]);
    expect(again).toMatchObject({ code: 0 });
    expect(again.stdout).toContain('bob has no threat block');
  });

  it('unblock-user lifts a geo anomaly state; trust-device stores a hash and updates a state in force', async () => {
    const threats = `test:${randomUUID()}`;
    const until = Date.now() + 3_600_000;
    const state = {
      kind: 'auth',
      subject: 'carol',
      rule: 'geo_anomaly',
      severity: 'medium',
      untilMs: until,
      authTimeS: 1,
      devices: [],
    };
    await reader.zadd(`${threats}:blocks:index`, until, 'auth:carol');
    await reader.hset(`${threats}:blocks:records`, 'auth:carol', JSON.stringify(state));
    const trusted = await admin(['trust-device', 'carol', 'device-of-carol-0001', '--threats-key-prefix', threats]);
    expect(trusted).toMatchObject({ code: 0, stderr: '' });
    expect(trusted.stdout).toContain('state in force was updated');
    const hash = createHash('sha256').update('device-of-carol-0001').digest('hex');
    expect(await reader.smembers(`${threats}:devices:carol`)).toEqual([hash]);
    expect(JSON.parse((await reader.hget(`${threats}:blocks:records`, 'auth:carol')) ?? '{}').devices).toEqual([hash]);
    const lifted = await admin(['unblock-user', 'carol', '--threats-key-prefix', threats]);
    expect(lifted.stdout).toContain('lifted auth:carol');
    const untrusted = await admin(['untrust-device', 'carol', 'device-of-carol-0001', '--threats-key-prefix', threats]);
    expect(untrusted).toMatchObject({ code: 0 });
    expect(await reader.smembers(`${threats}:devices:carol`)).toEqual([]);
  });
});

describe('npm run admin with the EXT_AUTHZ_REDIS_* variables', () => {
  it('acts on the master the sentinels name, logging in with the ACL users of the variables', async () => {
    const users = {
      dataUser: { name: 'authz', password: 'admin-data-acl-s3cret' },
      sentinelUser: { name: 'watcher', password: 'admin-sentinel-acl-s3cret' },
    };
    const sentinel = await startRedisSentinel(users);
    try {
      const keyPrefix = `test:${randomUUID()}`;
      const env = {
        EXT_AUTHZ_REDIS_MODE: 'sentinel',
        EXT_AUTHZ_REDIS_URL: sentinel.sentinelUrls.join(','),
        EXT_AUTHZ_REDIS_SENTINEL_MASTER: sentinel.masterName,
        EXT_AUTHZ_REDIS_USERNAME: users.dataUser.name,
        EXT_AUTHZ_REDIS_PASSWORD: users.dataUser.password,
        EXT_AUTHZ_REDIS_SENTINEL_USERNAME: users.sentinelUser.name,
        EXT_AUTHZ_REDIS_SENTINEL_PASSWORD: users.sentinelUser.password,
        EXT_AUTHZ_ACCOUNTS_KEY_PREFIX: keyPrefix,
      };
      const result = await admin(['disable', 'alice'], env);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout).toContain('disabled alice');
      const disabled = await redisCli(
        await sentinel.masterPort(),
        ['hget', `${keyPrefix}:disabled`, 'alice'],
        sentinel.dataAuth,
      );
      expect(disabled).toBe('1');
      expect(result.stdout + result.stderr).not.toContain(users.dataUser.password);

      const broken = await admin(['disable', 'alice'], { ...env, EXT_AUTHZ_REDIS_SENTINEL_MASTER: '' });
      expect(broken.code).toBe(1);
      expect(broken.stderr).toContain('EXT_AUTHZ_REDIS_SENTINEL_MASTER: required with EXT_AUTHZ_REDIS_MODE=sentinel');
    } finally {
      await sentinel.stop();
    }
  }, 90_000);
});
