import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { waitUntil } from '@sekisho/devstack/processes';
import {
  type RedisHandle,
  redisCli,
  type SecureRedisHandle,
  startRedis,
  startRedisCluster,
  startSecureRedis,
} from '@sekisho/devstack/redis';
import { createCertificateAuthority, issueServerCertificate } from '@sekisho/devstack/tls-certs';
import { createLogger } from '@sekisho/service-kit/logger';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadRateLimitConfig } from '../config';
import { createValueHasher } from './keys';
import { createRedisClient, type RedisConnection, RedisFault, type RedisFaultCode } from './redis-client';
import { RedisLimiter } from './redis-limiter';
import type { LimitCheck, LimitRule } from './types';

// Each Redis fault against a real redis-server: the limiter rejects with a RedisFault naming
// it (what the service answers by its failure mode), within the command timeout, and works
// again once the fault passes. Then TLS and ACL users through the configuration variables.

const timeoutMs = 300;
// Generous: the machine is shared; what matters is that an answer comes, not a hang.
const answerBound = timeoutMs + 2_000;

const rule: LimitRule = { id: 'r', domain: 'faults', requestsPerWindow: 1_000_000, windowSeconds: 60, blockSeconds: 0 };
const checks: LimitCheck[] = [{ rule, values: ['u'] }];

function capturedLogger() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { lines, logger: createLogger('ratelimit-service', { level: 'debug', destination }) };
}

const open: RedisConnection[] = [];
afterEach(() => {
  for (const c of open.splice(0)) c.disconnect();
});

function connect(env: Record<string, string>, logger = capturedLogger().logger): RedisConnection {
  const redis = createRedisClient({ topology: loadRateLimitConfig(env).redis, commandTimeoutMs: timeoutMs, logger });
  open.push(redis);
  return redis;
}

const ready = (redis: RedisConnection) =>
  waitUntil('the client to connect', 15_000, {}, async () =>
    redis.status === 'ready' ? { done: true, value: undefined } : { done: false, detail: redis.status },
  );

/** One hit: its decision, or the fault it rejected with, and how long it took. */
async function attempt(limiter: RedisLimiter) {
  const started = performance.now();
  try {
    const [decision] = await limiter.hit(checks, 1);
    return { ok: true as const, decision, ms: performance.now() - started };
  } catch (error) {
    return { ok: false as const, error, ms: performance.now() - started };
  }
}

async function expectFault(limiter: RedisLimiter, codes: RedisFaultCode[]) {
  const result = await attempt(limiter);
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.error).toBeInstanceOf(RedisFault);
  expect(codes).toContain((result.error as RedisFault).code);
  expect(result.ms).toBeLessThan(answerBound);
}

/** Polls until a hit succeeds (the fault has passed). */
const recovers = (limiter: RedisLimiter) =>
  waitUntil('the limiter to decide again', 20_000, {}, async () => {
    const result = await attempt(limiter);
    return result.ok ? { done: true, value: result.decision } : { done: false, detail: String(result.error) };
  });

describe('Redis faults (standalone)', () => {
  let server: RedisHandle;
  beforeAll(async () => {
    server = await startRedis();
    if (!server.control)
      throw new Error(`these tests stop and pause Redis; unset REDIS_URL so a private redis-server is started`);
  }, 60_000);
  afterAll(async () => {
    await server?.control?.resume();
    await server?.stop();
  });

  const limiterOn = async () => {
    const redis = connect({ RATELIMIT_REDIS_URL: server.url });
    await ready(redis);
    return new RedisLimiter({ redis, hashValues: createValueHasher() });
  };

  it('answers REDIS_UNAVAILABLE while the server refuses connections, and decides again once it is back', async () => {
    const limiter = await limiterOn();
    await server.control?.down();
    await expectFault(limiter, ['REDIS_UNAVAILABLE']);
    await expectFault(limiter, ['REDIS_UNAVAILABLE']);
    await server.control?.up();
    expect((await recovers(limiter))?.overLimit).toBe(false);
  });

  it('answers REDIS_TIMEOUT when the server stops answering', async () => {
    const limiter = await limiterOn();
    server.control?.pause();
    try {
      await expectFault(limiter, ['REDIS_TIMEOUT']);
    } finally {
      server.control?.resume();
    }
    await recovers(limiter);
  });

  it('reloads the script transparently after SCRIPT FLUSH (NOSCRIPT is never seen)', async () => {
    const limiter = await limiterOn();
    const port = Number(new URL(server.url).port);
    expect((await attempt(limiter)).ok).toBe(true);
    await redisCli(port, ['script', 'flush']);
    await redisCli(port, ['config', 'resetstat']);
    const after = await attempt(limiter);
    expect(after.ok).toBe(true);
    // EVALSHA met NOSCRIPT and the client sent the script itself (EVAL), within the one call.
    const stats = await redisCli(port, ['info', 'commandstats']);
    expect(stats).toMatch(/cmdstat_eval:calls=1,/);
  });

  it('answers REDIS_READONLY on a server turned into a replica, and decides again once it is a master', async () => {
    const other = await startRedis();
    try {
      const limiter = await limiterOn();
      const port = Number(new URL(server.url).port);
      await redisCli(port, ['replicaof', '127.0.0.1', new URL(other.url).port]);
      await expectFault(limiter, ['REDIS_READONLY']);
      // The client reconnects after READONLY; a replica still refuses writes.
      await expectFault(limiter, ['REDIS_READONLY', 'REDIS_UNAVAILABLE']);
      await redisCli(port, ['replicaof', 'no', 'one']);
      await recovers(limiter);
    } finally {
      await redisCli(Number(new URL(server.url).port), ['replicaof', 'no', 'one']).catch(() => {});
      await other.stop();
    }
  });
});

describe('Redis faults (a server loading its dataset)', () => {
  let server: SecureRedisHandle;
  beforeAll(async () => {
    server = await startSecureRedis({ extraArgs: ['--enable-debug-command', 'yes'] });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
  });

  it('answers REDIS_LOADING while Redis loads its dataset, and decides again after', async () => {
    const port = server.node.port;
    const redis = connect({ RATELIMIT_REDIS_URL: server.url });
    await ready(redis);
    const limiter = new RedisLimiter({ redis, hashValues: createValueHasher() });
    expect((await attempt(limiter)).ok).toBe(true);
    // 40,000 keys loaded at 100 µs each: four seconds of LOADING, answering clients meanwhile.
    await redisCli(port, ['debug', 'populate', '40000']);
    await redisCli(port, ['config', 'set', 'key-load-delay', '100']);
    await redisCli(port, ['config', 'set', 'loading-process-events-interval-bytes', '1024']);
    const reload = new Promise<void>((resolve) => {
      // DEBUG RELOAD answers when loading ends; its own connection waits for it.
      execFile('redis-cli', ['-p', String(port), 'debug', 'reload'], { timeout: 60_000 }, () => resolve());
    });
    const loading = await waitUntil('a LOADING answer', 20_000, {}, async () => {
      const result = await attempt(limiter);
      if (!result.ok && (result.error as RedisFault).code === 'REDIS_LOADING') return { done: true, value: result };
      return { done: false, detail: result.ok ? 'decided' : String(result.error) };
    });
    expect(loading.ms).toBeLessThan(answerBound);
    await reload;
    await redisCli(port, ['config', 'set', 'key-load-delay', '0']);
    await recovers(limiter);
  }, 60_000);
});

const aclCommands =
  '-@all +evalsha +eval +info +time +hmget +hset +hincrby +pexpire +pttl +get +set +zadd +zcard +zrange +zremrangebyscore';

describe('TLS and ACL users', () => {
  let dir: string;
  let server: SecureRedisHandle;
  let caFile: string;
  const password = 'limiter-s3cret-password';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rl-redis-tls-'));
    const ca = await createCertificateAuthority('sekisho test redis CA');
    // clientAuth too: a cluster's nodes present it to each other on the TLS bus.
    const cert = await issueServerCertificate(ca, {
      usages: ['serverAuth', 'clientAuth'],
      commonName: 'localhost',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
    });
    caFile = join(dir, 'ca.pem');
    await writeFile(caFile, ca.certificatePem);
    await writeFile(join(dir, 'server.pem'), cert.certificatePem);
    await writeFile(join(dir, 'server-key.pem'), cert.privateKeyPem);
    server = await startSecureRedis({
      tls: { certFile: join(dir, 'server.pem'), keyFile: join(dir, 'server-key.pem'), caFile },
      // The least the README says the service needs on a standalone server.
      users: [{ name: 'limiter', password, keys: '~sekisho:rl:*', commands: aclCommands.split(' ') }],
    });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('decides over rediss:// with the CA file and the ACL user from the variables', async () => {
    expect(server.url).toMatch(/^rediss:/);
    const redis = connect({
      RATELIMIT_REDIS_URL: server.url,
      RATELIMIT_REDIS_TLS_CA_FILE: caFile,
      RATELIMIT_REDIS_USERNAME: 'limiter',
      RATELIMIT_REDIS_PASSWORD: password,
    });
    await ready(redis);
    const limiter = new RedisLimiter({ redis, hashValues: createValueHasher() });
    const [decision] = await limiter.hit(checks, 1);
    expect(decision).toMatchObject({ overLimit: false, remaining: 999_999 });
  });

  it('takes the ACL user from the URL as well', async () => {
    const url = server.url.replace('rediss://', `rediss://limiter:${password}@`);
    const redis = connect({ RATELIMIT_REDIS_URL: url, RATELIMIT_REDIS_TLS_CA_FILE: caFile });
    await ready(redis);
    expect((await new RedisLimiter({ redis, hashValues: createValueHasher() }).hit(checks, 1))[0]?.overLimit).toBe(
      false,
    );
  });

  it('does not connect with a wrong password, logs REDIS_AUTH and never the password', async () => {
    const { lines, logger } = capturedLogger();
    const wrong = 'not-the-password-123';
    const redis = connect(
      {
        RATELIMIT_REDIS_URL: server.url,
        RATELIMIT_REDIS_TLS_CA_FILE: caFile,
        RATELIMIT_REDIS_USERNAME: 'limiter',
        RATELIMIT_REDIS_PASSWORD: wrong,
      },
      logger,
    );
    await waitUntil('a connection error to be logged', 15_000, {}, async () =>
      lines.some((l) => l.includes('redis_connection_error'))
        ? { done: true, value: undefined }
        : { done: false, detail: lines.join('') },
    );
    expect(lines.join('')).toContain('REDIS_AUTH');
    await expectFault(new RedisLimiter({ redis, hashValues: createValueHasher() }), [
      'REDIS_UNAVAILABLE',
      'REDIS_AUTH',
    ]);
    expect(lines.join('')).not.toContain(wrong);
    expect(lines.join('')).not.toContain(password);
  });

  it('decides on a Redis Cluster over TLS (rediss:// seeds, the nodes announcing their TLS ports)', async () => {
    const cluster = await startRedisCluster({
      tls: { certFile: join(dir, 'server.pem'), keyFile: join(dir, 'server-key.pem'), caFile },
    });
    try {
      const redis = connect({
        RATELIMIT_REDIS_MODE: 'cluster',
        RATELIMIT_REDIS_URL: cluster.urls.join(','),
        RATELIMIT_REDIS_TLS_CA_FILE: caFile,
      });
      await ready(redis);
      const limiter = new RedisLimiter({ redis, hashValues: createValueHasher() });
      for (const domain of ['a', 'b', 'c', 'd', 'e', 'f']) {
        const [decision] = await limiter.hit([{ rule: { ...rule, domain }, values: ['u'] }], 1);
        expect(decision?.overLimit).toBe(false);
      }
    } finally {
      await cluster.stop();
    }
  }, 90_000);

  it('refuses a server whose certificate the configured trust does not cover', async () => {
    const { lines, logger } = capturedLogger();
    // No CA file: Node's default trust does not know the test CA.
    const redis = connect(
      { RATELIMIT_REDIS_URL: server.url, RATELIMIT_REDIS_USERNAME: 'limiter', RATELIMIT_REDIS_PASSWORD: password },
      logger,
    );
    await waitUntil('a certificate error to be logged', 15_000, {}, async () =>
      lines.some((l) => /certificate/i.test(l))
        ? { done: true, value: undefined }
        : { done: false, detail: lines.join('') },
    );
    expect(redis.status).not.toBe('ready');
    expect(lines.join('')).not.toContain(password);
  });
});
