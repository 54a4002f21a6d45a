import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisSentinelHandle, redisCli, startRedisSentinel } from '@sekisho/devstack/redis';
import { startTraffic, type TrafficOutcome, writeRedisTlsFiles } from '@sekisho/devstack/redis-failover';
import { createLogger } from '@sekisho/service-kit/logger';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadRateLimitConfig } from '../config';
import { counterKey, createValueHasher } from './keys';
import { createRedisClient, type RedisConnection, RedisFault } from './redis-client';
import { RedisLimiter } from './redis-limiter';
import type { LimitRule } from './types';

// The limiter through Sentinel (a master, a replica, a sentinel) while the master changes
// under traffic: every request gets an answer in time (a decision, or a RedisFault the
// service answers by its failure mode), and decisions resume on the new master.

const timeoutMs = 300;
// Generous (a shared machine): an answer, not a wait for the failover to finish.
const answerBound = timeoutMs + 2_000;
const hash = createValueHasher();
const rule: LimitRule = {
  id: 'route:any',
  domain: 'shop',
  requestsPerWindow: 1_000_000,
  windowSeconds: 3600,
  blockSeconds: 0,
};

let sentinel: RedisSentinelHandle;
let redis: RedisConnection;
let limiter: RedisLimiter;

/** A Sentinel setup and the service's client for it (with the passwords, when given). */
async function setUp(
  opts: {
    sentinels?: number;
    data?: string;
    sentinel?: string;
    harness?: Parameters<typeof startRedisSentinel>[0];
    env?: Record<string, string>;
  } = {},
) {
  sentinel = await startRedisSentinel({
    sentinels: opts.sentinels,
    password: opts.data,
    sentinelPassword: opts.sentinel,
    ...opts.harness,
  });
  const { redis: topology } = loadRateLimitConfig({
    RATELIMIT_REDIS_MODE: 'sentinel',
    RATELIMIT_REDIS_URL: sentinel.sentinelUrls.join(','),
    RATELIMIT_REDIS_SENTINEL_MASTER: sentinel.masterName,
    ...(opts.data ? { RATELIMIT_REDIS_PASSWORD: opts.data } : {}),
    ...(opts.sentinel ? { RATELIMIT_REDIS_SENTINEL_PASSWORD: opts.sentinel } : {}),
    ...opts.env,
  });
  redis = createRedisClient({
    topology,
    commandTimeoutMs: timeoutMs,
    logger: createLogger('ratelimit-service', { level: 'silent' }),
  });
  limiter = new RedisLimiter({ redis, hashValues: hash });
  await waitUntil('the sentinel client to be ready', 20_000, {}, async () =>
    redis.status === 'ready' ? { done: true, value: undefined } : { done: false, detail: redis.status },
  );
}

async function tearDown() {
  redis?.disconnect();
  await sentinel?.stop();
}

/** Requests every 10 ms until stopped, each outcome recorded (devstack/redis-failover). */
const traffic = () => startTraffic(() => limiter.hit([{ rule, values: ['u'] }], 1));

function expectEveryAnswerInTime(outcomes: readonly TrafficOutcome<unknown>[]) {
  for (const o of outcomes) {
    expect(o.ms).toBeLessThan(answerBound);
    if (!o.ok) expect(o.error).toBeInstanceOf(RedisFault);
  }
}

/** The codes of the requests refused meanwhile. */
const faultCodes = (outcomes: readonly TrafficOutcome<unknown>[]) =>
  new Set(outcomes.flatMap((o) => (o.ok ? [] : [(o.error as RedisFault).code])));

/**
 * SENTINEL FAILOVER while traffic runs: `before` decisions on the old master, then `after` on
 * the new one; every answer in time. The old and new masters' ports and the calls made.
 */
async function failoverUnderTraffic(
  before: number,
  after: number,
): Promise<{ oldPort: number; newPort: number; calls: number }> {
  const oldPort = await sentinel.masterPort();
  const t = traffic();
  let newPort: number;
  try {
    await t.decided(0, before);
    newPort = await sentinel.failover();
    await t.decided(t.outcomes.length, after);
  } finally {
    await t.stop();
  }
  expectEveryAnswerInTime(t.outcomes);
  return { oldPort, newPort, calls: t.outcomes.length };
}

describe('Sentinel failover during traffic (three sentinels, quorum two)', () => {
  beforeAll(() => setUp({ sentinels: 3 }), 90_000);
  afterAll(tearDown);

  it('keeps answering through SENTINEL FAILOVER and decides on the new master', async () => {
    const { oldPort, newPort } = await failoverUnderTraffic(20, 20);
    expect(newPort).not.toBe(oldPort);
    // The counter lives on (and keeps counting on) the new master.
    const count = Number(await redisCli(await sentinel.masterPort(), ['hget', counterKey(rule, hash(['u'])), 'c']));
    expect(count).toBeGreaterThanOrEqual(20);
  }, 90_000);

  it('keeps answering when the master is killed, and decides once the sentinel has promoted the replica', async () => {
    // The replica must be in sync (it was the master until the previous failover).
    const { master, replica } = await sentinel.syncedRoles();
    const oldPort = master.port;
    const t = traffic();
    try {
      await t.decided(0, 10);
      await master.stop();
      const newPort = await sentinel.waitForNewMaster(oldPort, 60_000);
      expect(newPort).toBe(replica.port);
      await t.decided(t.outcomes.length, 20);
    } finally {
      await t.stop();
      await master.start();
    }
    expectEveryAnswerInTime(t.outcomes);
    // While no master answered, requests were refused fast, each with a code.
    for (const code of faultCodes(t.outcomes))
      expect(['REDIS_UNAVAILABLE', 'REDIS_TIMEOUT', 'REDIS_READONLY', 'REDIS_LOADING']).toContain(code);
  }, 180_000);
});

describe('Sentinel with passwords (data nodes and sentinels)', () => {
  const passwords = { data: 'data-node-s3cret', sentinel: 'sentinel-s3cret' };
  beforeAll(() => setUp(passwords), 90_000);
  afterAll(tearDown);

  it('decides with RATELIMIT_REDIS_PASSWORD and RATELIMIT_REDIS_SENTINEL_PASSWORD, and after a failover', async () => {
    // Both really require their password.
    const noAuth = (port: number) => redisCli(port, ['ping']).catch((e: Error) => e.message);
    expect(await noAuth(sentinel.servers[0]?.port as number)).toMatch(/NOAUTH/);
    expect(await noAuth(sentinel.sentinels[0]?.port as number)).toMatch(/NOAUTH/);
    const [first] = await limiter.hit([{ rule, values: ['p'] }], 1);
    expect(first?.overLimit).toBe(false);
    await failoverUnderTraffic(5, 10);
  }, 90_000);
});

describe('Sentinel over TLS with ACL users on the data nodes and on the sentinels', () => {
  const users = {
    dataUser: { name: 'limiter', password: 'data-node-acl-s3cret' },
    sentinelUser: { name: 'watcher', password: 'sentinel-acl-s3cret' },
  };
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rl-sentinel-tls-'));
    // 127.0.0.1: the address the sentinels announce for the master.
    const tls = await writeRedisTlsFiles(dir, 'sekisho test sentinel CA');
    await setUp({
      sentinels: 3,
      harness: { ...users, tls },
      env: {
        RATELIMIT_REDIS_TLS_CA_FILE: tls.caFile,
        RATELIMIT_REDIS_USERNAME: users.dataUser.name,
        RATELIMIT_REDIS_PASSWORD: users.dataUser.password,
        RATELIMIT_REDIS_SENTINEL_USERNAME: users.sentinelUser.name,
        RATELIMIT_REDIS_SENTINEL_PASSWORD: users.sentinelUser.password,
      },
    });
  }, 180_000);
  afterAll(async () => {
    await tearDown();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('decides over rediss:// sentinels and data nodes with both ACL users, through a failover under traffic', async () => {
    expect(sentinel.sentinelUrls.every((u) => u.startsWith('rediss://'))).toBe(true);
    // Each really requires TLS and its own user: plaintext is refused, the other user too.
    const port = { data: sentinel.servers[0]?.port as number, sentinel: sentinel.sentinels[0]?.port as number };
    const plain = (p: number) => redisCli(p, ['ping'], { timeoutMs: 3_000 }).catch((e: Error) => e.message);
    expect(await plain(port.data)).not.toBe('PONG');
    expect(await plain(port.sentinel)).not.toBe('PONG');
    const tlsOnly = { tls: sentinel.dataAuth.tls as { caFile: string } };
    expect(await redisCli(port.data, ['ping'], tlsOnly).catch((e: Error) => e.message)).toMatch(/NOAUTH/);
    expect(await redisCli(port.sentinel, ['ping'], tlsOnly).catch((e: Error) => e.message)).toMatch(/NOAUTH/);
    const crossed = { ...tlsOnly, user: users.sentinelUser.name, password: users.sentinelUser.password };
    expect(await redisCli(port.data, ['ping'], crossed).catch((e: Error) => e.message)).toMatch(/WRONGPASS|NOAUTH/);

    const { oldPort, newPort, calls } = await failoverUnderTraffic(20, 20);
    expect(newPort).not.toBe(oldPort);
    const key = counterKey(rule, hash(['u']));
    const count = Number(await redisCli(await sentinel.masterPort(), ['hget', key, 'c'], sentinel.dataAuth));
    // The counter keeps counting on the new master (the 20 decided after the failover at
    // least). It may hold fewer than every decision: what the old master counted after the
    // replica's promotion and before the client moved is dropped when it resyncs as a replica.
    expect(count).toBeGreaterThanOrEqual(20);
    expect(count).toBeLessThanOrEqual(calls);
  }, 180_000);

  it('keeps answering when the TLS master is killed, and decides on the promoted replica', async () => {
    const { master, replica } = await sentinel.syncedRoles();
    const oldPort = master.port;
    const t = traffic();
    try {
      await t.decided(0, 10);
      await master.kill();
      expect(await sentinel.waitForNewMaster(oldPort, 60_000)).toBe(replica.port);
      await t.decided(t.outcomes.length, 20);
    } finally {
      await t.stop();
      await master.start();
    }
    expectEveryAnswerInTime(t.outcomes);
    for (const code of faultCodes(t.outcomes))
      expect(['REDIS_UNAVAILABLE', 'REDIS_TIMEOUT', 'REDIS_READONLY', 'REDIS_LOADING']).toContain(code);
  }, 180_000);
});
