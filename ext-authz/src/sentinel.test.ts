import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisSentinelHandle, redisCli, startRedisSentinel } from '@sekisho/devstack/redis';
import { writeRedisTlsFiles } from '@sekisho/devstack/redis-failover';
import { createLogger } from '@sekisho/service-kit/logger';
import { type RedisTopology, redisNodeOptions } from '@sekisho/service-kit/redis-topology';
import { type ThreatBlock, threatKeys } from '@sekisho/service-kit/threat-contract';
import { defineThreatScripts, putBlock } from '@sekisho/threat-detector/redis-store';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accountKeys, RedisAccountStore, writeAccountChange } from './accounts/redis-store';
import { loadExtAuthzConfig } from './config';
import { RedisThreatStore } from './threats/block-store';

// ext-authz's account state and the threat detector's blocks through a real Sentinel setup (a
// master, a replica, three sentinels; TLS everywhere, ACL users on the data nodes and on the
// sentinels), configured by EXT_AUTHZ_REDIS_*: changes keep arriving across a planned failover
// and across a killed master, because the subscriber follows the master the sentinels name and
// resubscribes there (PUBSUB NUMSUB on the new master proves where it listens). The periodic
// resync is an hour away, so what arrives came by the channel or the resubscription's reload.

const users = {
  dataUser: { name: 'authz', password: 'authz-data-acl-s3cret' },
  sentinelUser: { name: 'watcher', password: 'authz-sentinel-acl-s3cret' },
};
const prefixes = { accounts: 'test:sentinel:accounts', threats: 'test:sentinel:threats' };
const quiet = createLogger('ext-authz', { level: 'silent' });

let dir: string;
let sentinel: RedisSentinelHandle;
let topology: RedisTopology;
let writerOptions: RedisOptions;
let accounts: RedisAccountStore;
let threats: RedisThreatStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'authz-sentinel-'));
  const tls = await writeRedisTlsFiles(dir, 'sekisho test sentinel CA');
  sentinel = await startRedisSentinel({ sentinels: 3, ...users, tls });
  const config = loadExtAuthzConfig({
    EXT_AUTHZ_REDIS_MODE: 'sentinel',
    EXT_AUTHZ_REDIS_URL: sentinel.sentinelUrls.join(','),
    EXT_AUTHZ_REDIS_SENTINEL_MASTER: sentinel.masterName,
    EXT_AUTHZ_REDIS_USERNAME: users.dataUser.name,
    EXT_AUTHZ_REDIS_PASSWORD: users.dataUser.password,
    EXT_AUTHZ_REDIS_SENTINEL_USERNAME: users.sentinelUser.name,
    EXT_AUTHZ_REDIS_SENTINEL_PASSWORD: users.sentinelUser.password,
    EXT_AUTHZ_REDIS_TLS_CA_FILE: tls.caFile,
  });
  if (!config.redis) throw new Error('EXT_AUTHZ_REDIS_URL was given: a topology is expected');
  topology = config.redis;
  // The admin command's and the detector's side: a writer that asks the sentinels for the master.
  writerOptions = {
    ...(redisNodeOptions(topology) as RedisOptions),
    maxRetriesPerRequest: 1,
    retryStrategy: () => 100,
    sentinelRetryStrategy: () => 100,
  };
  accounts = new RedisAccountStore({
    redis: topology,
    keyPrefix: prefixes.accounts,
    resyncMs: 3_600_000,
    logger: quiet,
  });
  threats = new RedisThreatStore({ redis: topology, keyPrefix: prefixes.threats, resyncMs: 3_600_000, logger: quiet });
  accounts.start();
  threats.start();
  await waitFor('both stores to load and subscribe', () => [accounts, threats].every((s) => s.loaded && s.subscribed));
}, 120_000);

afterAll(async () => {
  await accounts?.close();
  await threats?.close();
  await sentinel?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const waitFor = (what: string, condition: () => boolean, timeoutMs = 20_000) =>
  waitUntil(what, timeoutMs, {}, async () =>
    condition() ? { done: true, value: undefined } : { done: false, detail: 'not yet' },
  );

/**
 * A write retried until it reaches the (new) master, each attempt on a connection of its own
 * (as each admin command is its own process): a test client left half-connected by the kill
 * must not decide whether the product's subscribers followed the failover.
 */
const written = <T>(what: string, write: (writer: Redis) => Promise<T>) =>
  waitUntil(what, 30_000, {}, async () => {
    const writer = new Redis(writerOptions);
    writer.on('error', () => {});
    defineThreatScripts(writer);
    try {
      return { done: true, value: await write(writer) };
    } catch (error) {
      return { done: false, detail: String(error) };
    } finally {
      writer.disconnect();
    }
  });

const ipBlock = (subject: string): ThreatBlock => ({
  kind: 'ip',
  subject,
  rule: 'brute_force',
  severity: 'high',
  untilMs: Date.now() + 3_600_000,
});

/** Disables `uid` and blocks `ip`, then waits for both to be in force in this replica's memory. */
async function changesArrive(uid: string, ip: string) {
  await written(`disable ${uid}`, (writer) =>
    writeAccountChange(writer, prefixes.accounts, { uid, field: 'disabled', value: true }),
  );
  await written(`block ${ip}`, (writer) => putBlock(writer, prefixes.threats, ipBlock(ip)));
  await waitFor(
    `${uid} disabled and ${ip} blocked in memory`,
    () => accounts.get(uid)?.disabled === true && threats.ipRefusal(ip, Date.now())?.code === 'IP_BLOCKED',
  );
}

/** Both subscribers listen on the master the sentinels name now. */
async function subscribedOn(port: number) {
  const numsub = async () =>
    redisCli(
      port,
      ['pubsub', 'numsub', accountKeys(prefixes.accounts).channel, threatKeys(prefixes.threats).channel],
      sentinel.dataAuth,
    );
  await waitUntil(`the subscribers on the master ${port}`, 20_000, {}, async () => {
    const counts = (await numsub().catch((e: Error) => e.message)).split('\n').filter((_, i) => i % 2 === 1);
    return counts.length === 2 && counts.every((c) => Number(c) >= 1)
      ? { done: true, value: undefined }
      : { done: false, detail: counts.join(',') };
  });
}

describe('ext-authz state through Sentinel (TLS, ACL users), EXT_AUTHZ_REDIS_MODE=sentinel', () => {
  it('receives account changes and threat blocks on the first master', async () => {
    await subscribedOn(await sentinel.masterPort());
    await changesArrive('uid-before', '198.51.100.10');
  });

  it('keeps receiving them after SENTINEL FAILOVER: resubscribed on the new master', async () => {
    const oldPort = await sentinel.masterPort();
    const newPort = await sentinel.failover();
    expect(newPort).not.toBe(oldPort);
    await subscribedOn(newPort);
    await changesArrive('uid-after-failover', '198.51.100.11');
    // What was in force before is still in force.
    expect(accounts.get('uid-before')?.disabled).toBe(true);
    expect(threats.ipRefusal('198.51.100.10', Date.now())?.code).toBe('IP_BLOCKED');
  }, 90_000);

  it('keeps receiving them after the master is killed and the sentinels promote the replica', async () => {
    const { master, replica } = await sentinel.syncedRoles();
    const oldPort = master.port;
    await master.kill();
    try {
      // Decisions meanwhile come from memory: the last state stays in force.
      expect(accounts.get('uid-after-failover')?.disabled).toBe(true);
      const newPort = await sentinel.waitForNewMaster(oldPort, 60_000);
      expect(newPort).toBe(replica.port);
      await subscribedOn(newPort);
      await changesArrive('uid-after-kill', '198.51.100.12');
    } finally {
      await master.start();
    }
    expect(threats.ipRefusal('198.51.100.11', Date.now())?.code).toBe('IP_BLOCKED');
  }, 120_000);
});
