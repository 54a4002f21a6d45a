import { randomUUID } from 'node:crypto';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import { resolveRedisTopology } from '@sekisho/service-kit/redis-topology';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AccountStoreOptions,
  accountKeys,
  pruneRevocations,
  RedisAccountStore,
  readAccountState,
  recordFirebaseRevocation,
  type SyncTrigger,
  writeAccountChange,
} from './redis-store';

// The replica's copy against a real redis-server: loading, the change channel, the periodic
// resync, and what happens while the subscription is lost.

let redis: RedisHandle;
let writer: Redis;
const stores: RedisAccountStore[] = [];

beforeAll(async () => {
  redis = await startRedis();
  writer = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  writer.on('error', () => {}); // the outage test stops the server under it
});

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
});

afterAll(async () => {
  writer?.disconnect();
  await redis?.stop();
});

const quiet = createLogger('ext-authz', { level: 'silent' });

function startStore(prefix: string, resyncMs = 60_000, prune?: AccountStoreOptions['prune']) {
  const syncs: Array<{ ok: boolean; trigger: SyncTrigger }> = [];
  const subscriptions: boolean[] = [];
  const prunes: Array<{ ok: boolean; removed: number }> = [];
  const store = new RedisAccountStore({
    redis: resolveRedisTopology({ url: redis.url, mode: 'standalone' }, 'EXT_AUTHZ'),
    keyPrefix: prefix,
    resyncMs,
    ...(prune ? { prune } : {}),
    logger: quiet,
    events: {
      synced: (e) => syncs.push({ ok: e.ok, trigger: e.trigger }),
      subscription: (s) => subscriptions.push(s),
      changeApplied: () => {},
      pruned: (e) => prunes.push(e),
    },
  });
  store.start();
  stores.push(store);
  return { store, syncs, subscriptions, prunes };
}

const until = (what: string, condition: () => boolean, timeoutMs = 5_000) =>
  waitUntil(what, timeoutMs, {}, async () =>
    condition() ? { done: true, value: undefined } : { done: false, detail: 'not yet' },
  );

const prefix = () => `test:${randomUUID()}`;

describe('RedisAccountStore', () => {
  it('loads the state there is at start, then follows each published change', async () => {
    const p = prefix();
    await writeAccountChange(writer, p, { uid: 'early', field: 'disabled', value: true });
    const { store, syncs } = startStore(p);
    expect(store.loaded).toBe(false);
    await until('the first load', () => store.loaded);
    expect(store.get('early')).toEqual({ disabled: true });
    expect(syncs[0]).toEqual({ ok: true, trigger: 'initial' });

    const version = await writeAccountChange(writer, p, { uid: 'alice', field: 'validAfter', value: 1_800_000_000 });
    await until('the revocation', () => store.get('alice')?.validAfter === 1_800_000_000);
    await writeAccountChange(writer, p, { uid: 'early', field: 'disabled', value: null });
    await until('the enable', () => store.get('early') === undefined);
    expect(store.status()).toMatchObject({
      loaded: true,
      subscribed: true,
      version: version + 1,
      revoked: 1,
      disabled: 0,
    });
    // Changes came over the channel, not from further loads.
    expect(syncs).toHaveLength(1);
  });

  it('brings the same change to every replica', async () => {
    const p = prefix();
    const replicas = [startStore(p), startStore(p)];
    await until('both loaded and subscribed', () => replicas.every(({ store }) => store.loaded && store.subscribed));
    await writeAccountChange(writer, p, { uid: 'bob', field: 'group', value: 'vip' });
    await until('both replicas', () => replicas.every(({ store }) => store.get('bob')?.group === 'vip'), 1_000);
  });

  it('picks up by the periodic resync a change whose message it never got', async () => {
    const p = prefix();
    const { store, syncs } = startStore(p, 200);
    await until('the first load', () => store.loaded);
    // Written as the admin command would, without the publication.
    const keys = accountKeys(p);
    await writer.multi().hset(keys.hash('disabled'), 'carol', '1').incr(keys.version).exec();
    await until('the resync', () => store.get('carol')?.disabled === true);
    expect(syncs.some((s) => s.trigger === 'scheduled' && s.ok)).toBe(true);
  });

  it('reloads on a gap in the versions', async () => {
    const p = prefix();
    const { store, syncs } = startStore(p);
    await until('the first load', () => store.loaded);
    const keys = accountKeys(p);
    await writer.multi().hset(keys.hash('customerId'), 'dave', 'c-9').incr(keys.version).exec();
    await writeAccountChange(writer, p, { uid: 'erin', field: 'disabled', value: true });
    await until(
      'the gap reload',
      () => store.get('dave')?.customerId === 'c-9' && store.get('erin')?.disabled === true,
    );
    expect(syncs.map((s) => s.trigger)).toContain('gap');
  });

  it('ignores a message that is not a change and values no command writes', async () => {
    const p = prefix();
    const keys = accountKeys(p);
    await writer.hset(keys.hash('validAfter'), 'frank', 'yesterday');
    const { store } = startStore(p);
    await until('loaded and subscribed', () => store.loaded && store.subscribed);
    expect(store.get('frank')).toBeUndefined();
    expect(store.status()).toMatchObject({ skipped_values: 1 });
    for (const text of ['not json', '{}', '{"version":1,"uid":"g","field":"admin","value":"1"}', 'null']) {
      await writer.publish(keys.channel, text);
    }
    await writeAccountChange(writer, p, { uid: 'grace', field: 'disabled', value: true });
    await until('the valid change after them', () => store.get('grace')?.disabled === true);
    expect(store.get('g')).toBeUndefined();
  });

  it('resubscribes and reloads after its subscriber connection is killed, catching up on what it missed', async () => {
    const p = prefix();
    const { store, syncs, subscriptions } = startStore(p);
    await until('loaded and subscribed', () => store.loaded && store.subscribed);
    await writer.client('KILL', 'TYPE', 'pubsub');
    // Published while the subscriber reconnects: missed by the channel, or not; either way it arrives.
    await writeAccountChange(writer, p, { uid: 'heidi', field: 'disabled', value: true });
    await until('the change', () => store.get('heidi')?.disabled === true);
    await until('the reload after resubscribing', () => syncs.some((s) => s.trigger === 'resubscribed' && s.ok));
    expect(subscriptions).toEqual([true, false, true]);
  });
});

// Revocations Firebase also made go once every token signed in before them has expired; the
// others stay. Against the real server: the Lua script, its publication, every replica's copy.
describe('pruning revocations', () => {
  const hour = 3600;

  it('removes only revocations Firebase confirmed longer ago than the retention, from Redis and every replica', async () => {
    const p = prefix();
    const nowMs = Date.now();
    const now = Math.floor(nowMs / 1000);
    const revoke = async (uid: string, validAfter: number, firebaseSecond?: number) => {
      await writeAccountChange(writer, p, { uid, field: 'validAfter', value: validAfter });
      if (firebaseSecond !== undefined) await recordFirebaseRevocation(writer, p, { uid, validAfter, firebaseSecond });
    };
    await revoke('old', now - 3 * hour, now - 3 * hour + 1);
    await revoke('tenant:old', now - 3 * hour, now - 3 * hour); // a uid with the separator in it
    await revoke('young', now - 600, now - 600);
    await revoke('sekisho-only', now - 10 * hour); // Firebase never told: its refreshed tokens need the entry
    await revoke('replaced', now - 5 * hour, now - 5 * hour);
    await revoke('replaced', now - 4 * hour); // revoked again, Sekisho only: the later one stays
    await revoke('also-disabled', now - 3 * hour, now - 3 * hour);
    await writeAccountChange(writer, p, { uid: 'also-disabled', field: 'disabled', value: true });
    // Just inside the retention: kept.
    await revoke('edge', now - 2 * hour + 1, now - 2 * hour + 1);

    const replicas = [startStore(p), startStore(p)];
    await until('both loaded and subscribed', () => replicas.every(({ store }) => store.loaded && store.subscribed));

    expect(await pruneRevocations(writer, p, { nowMs, retentionSeconds: 2 * hour })).toBe(3);
    const expected = new Map([
      ['young', { validAfter: now - 600 }],
      ['sekisho-only', { validAfter: now - 10 * hour }],
      ['replaced', { validAfter: now - 4 * hour }],
      ['also-disabled', { disabled: true }],
      ['edge', { validAfter: now - 2 * hour + 1 }],
    ]);
    expect((await readAccountState(writer, p)).table).toEqual(expected);
    for (const { store } of replicas) {
      await until(
        'the replica to drop them',
        () =>
          ['old', 'tenant:old'].every((uid) => store.get(uid) === undefined) && !store.get('also-disabled')?.validAfter,
        1_000,
      );
      for (const [uid, entry] of expected) expect(store.get(uid)).toEqual(entry);
    }
    // What is left to prune later: the two inside the retention (the replaced one's record went).
    expect(await writer.zrange(accountKeys(p).revokedInFirebase, 0, -1)).toEqual([
      `${now - 2 * hour + 1}:edge`,
      `${now - 600}:young`,
    ]);
    expect(await pruneRevocations(writer, p, { nowMs, retentionSeconds: 2 * hour })).toBe(0);
  });

  it('works through a backlog larger than one batch', async () => {
    const p = prefix();
    const keys = accountKeys(p);
    const old = Math.floor(Date.now() / 1000) - 3 * hour;
    const multi = writer.multi();
    for (let i = 0; i < 1_200; i++) {
      multi.hset(keys.hash('validAfter'), `u${i}`, String(old)).zadd(keys.revokedInFirebase, old, `${old}:u${i}`);
    }
    await multi.exec();
    expect(await pruneRevocations(writer, p, { nowMs: Date.now(), retentionSeconds: 2 * hour, batch: 500 })).toBe(
      1_200,
    );
    expect(await writer.hlen(keys.hash('validAfter'))).toBe(0);
    expect(await writer.zcard(keys.revokedInFirebase)).toBe(0);
  });

  it('runs on the replica’s timer, and reports the run', async () => {
    const p = prefix();
    const old = Math.floor(Date.now() / 1000) - 3 * hour;
    await writeAccountChange(writer, p, { uid: 'kate', field: 'validAfter', value: old });
    await recordFirebaseRevocation(writer, p, { uid: 'kate', validAfter: old, firebaseSecond: old });
    const { store, prunes } = startStore(p, 60_000, { retentionSeconds: 2 * hour, intervalMs: 100 });
    await until('the pruned revocation', () => store.loaded && store.get('kate') === undefined);
    await until('the run reported', () => prunes.some((e) => e.ok && e.removed === 1));
    expect(store.status()).toMatchObject({
      prune: { retention_seconds: 2 * hour, interval_ms: 100, last: { ok: true } },
    });
  });
});

// Stopping the server needs a redis-server this process started (not REDIS_URL).
describe.skipIf(Boolean(process.env.REDIS_URL))('RedisAccountStore while Redis is down', () => {
  it('keeps deciding from its last state, says it lost the subscription, and resyncs when Redis is back', async () => {
    const control = redis.control;
    if (!control) throw new Error(`no outage controls for a Redis from ${redis.source}`);
    const p = prefix();
    await writeAccountChange(writer, p, { uid: 'ivan', field: 'disabled', value: true });
    const { store, syncs } = startStore(p, 300, { retentionSeconds: 7200, intervalMs: 600_000 });
    await until('loaded and subscribed', () => store.loaded && store.subscribed);

    await control.down();
    try {
      await until('the lost subscription', () => !store.subscribed);
      // Scheduled resyncs fail meanwhile; the state stays.
      await until('a failed resync', () => syncs.some((s) => !s.ok));
      // So does pruning: nothing is removed, and it says so.
      expect(await store.prune()).toBe(0);
      expect(store.status()).toMatchObject({ prune: { last: { ok: false, removed: 0 } } });
      expect(store.get('ivan')).toEqual({ disabled: true });
      expect(store.status()).toMatchObject({ loaded: true, subscribed: false, disabled: 1 });
    } finally {
      await control.up();
    }
    // The restarted server is empty (no persistence): the reload installs that, and new changes flow again.
    await until('resubscribed', () => store.subscribed, 10_000);
    await until('the empty state', () => store.get('ivan') === undefined, 10_000);
    await writeAccountChange(writer, p, { uid: 'judy', field: 'validAfter', value: 5 });
    await until('the next change', () => store.get('judy')?.validAfter === 5);
  });

  it('starts unloaded while Redis is down, and loads soon after it comes up (not at the next scheduled resync)', async () => {
    const control = redis.control;
    if (!control) throw new Error(`no outage controls for a Redis from ${redis.source}`);
    const p = prefix();
    await control.down();
    let store: RedisAccountStore;
    try {
      ({ store } = startStore(p, 600_000));
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(store.loaded).toBe(false);
      expect(store.status()).toMatchObject({ loaded: false, subscribed: false });
    } finally {
      await control.up();
    }
    await until('the first load', () => store.loaded, 10_000);
  });
});
