import { waitUntil } from '@sekisho/devstack/processes';
import { type SecureRedisHandle, startSecureRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import type { ThreatBlock } from '@sekisho/service-kit/threat-contract';
import { defineThreatScripts, putBlock } from '@sekisho/threat-detector/redis-store';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RedisAccountStore, recordFirebaseRevocation, writeAccountChange } from './accounts/redis-store';
import { loadExtAuthzConfig } from './config';
import { RedisThreatStore } from './threats/block-store';

// The least an ext-authz replica's ACL user needs (what the README lists), against a real
// redis-server whose default user is off: both stores load, follow the channels and prune.

/** The README's list: the loads, the subscription, the prune scripts and what they call, ioredis' ready check. */
const extAuthzAclCommands =
  '-@all +info +ping +multi +exec +hgetall +get +hmget +zrangebyscore +subscribe +eval +evalsha +hget +hdel +zrem +incr +publish';

let server: SecureRedisHandle;
let writer: Redis;
const stores: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  server = await startSecureRedis({
    users: [
      { name: 'authz', password: 'authz-acl-s3cret', keys: '~sekisho:*', commands: extAuthzAclCommands.split(' ') },
      { name: 'admin', password: 'admin-acl-s3cret' },
    ],
  });
  writer = new Redis(server.url.replace('redis://', 'redis://admin:admin-acl-s3cret@'), { maxRetriesPerRequest: 1 });
  defineThreatScripts(writer);
}, 60_000);

afterAll(async () => {
  for (const store of stores) await store.close();
  writer?.disconnect();
  await server?.stop();
});

it('loads, follows and prunes the account state and the blocks with only the listed commands', async () => {
  const { redis: topology } = loadExtAuthzConfig({
    EXT_AUTHZ_REDIS_URL: server.url,
    EXT_AUTHZ_REDIS_USERNAME: 'authz',
    EXT_AUTHZ_REDIS_PASSWORD: 'authz-acl-s3cret',
  });
  if (!topology) throw new Error('a topology is expected');
  const quiet = createLogger('ext-authz', { level: 'silent' });
  const pruned: Array<{ ok: boolean; removed: number }> = [];
  const accounts = new RedisAccountStore({
    redis: topology,
    keyPrefix: 'sekisho:accounts',
    resyncMs: 3_600_000,
    prune: { retentionSeconds: 3_600, intervalMs: 3_600_000 },
    logger: quiet,
    events: { synced: () => {}, subscription: () => {}, changeApplied: () => {}, pruned: (e) => pruned.push(e) },
  });
  const threats = new RedisThreatStore({ redis: topology, keyPrefix: 'sekisho:threats', resyncMs: 100, logger: quiet });
  stores.push(accounts, threats);
  accounts.start();
  threats.start();
  const until = (what: string, condition: () => boolean) =>
    waitUntil(what, 10_000, {}, async () =>
      condition() ? { done: true, value: undefined } : { done: false, detail: 'not yet' },
    );
  await until('both loaded and subscribed', () => [accounts, threats].every((s) => s.loaded && s.subscribed));

  const block: ThreatBlock = {
    kind: 'ip',
    subject: '198.51.100.30',
    rule: 'brute_force',
    severity: 'high',
    untilMs: Date.now() + 3_600_000,
  };
  await writeAccountChange(writer, 'sekisho:accounts', { uid: 'alice', field: 'disabled', value: true });
  await putBlock(writer, 'sekisho:threats', block);
  // An expired block, which the threat store's reload prunes (MULTI ZREM HDEL).
  await putBlock(writer, 'sekisho:threats', { ...block, subject: '198.51.100.31', untilMs: Date.now() - 1 });
  await until(
    'the change and the block in memory',
    () =>
      accounts.get('alice')?.disabled === true && threats.ipRefusal('198.51.100.30', Date.now())?.code === 'IP_BLOCKED',
  );
  await waitUntil('the expired block pruned', 10_000, {}, async () =>
    (await writer.zscore('sekisho:threats:blocks:index', 'ip:198.51.100.31')) === null
      ? { done: true, value: undefined }
      : { done: false, detail: 'still there' },
  );

  // A revocation Firebase confirmed long ago: the prune script removes it with the listed commands.
  const validAfter = Math.floor(Date.now() / 1000) - 10_000;
  await writeAccountChange(writer, 'sekisho:accounts', { uid: 'bob', field: 'validAfter', value: validAfter });
  await recordFirebaseRevocation(writer, 'sekisho:accounts', { uid: 'bob', validAfter, firebaseSecond: validAfter });
  expect(await accounts.prune()).toBe(1);
  expect(pruned.at(-1)).toEqual({ ok: true, removed: 1 });
});
