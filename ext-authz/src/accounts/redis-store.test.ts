import { randomUUID } from 'node:crypto';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { accountKeys, RedisAccountStore, type SyncTrigger, writeAccountChange } from './redis-store';

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

function startStore(prefix: string, resyncMs = 60_000) {
  const syncs: Array<{ ok: boolean; trigger: SyncTrigger }> = [];
  const subscriptions: boolean[] = [];
  const store = new RedisAccountStore({
    url: redis.url,
    keyPrefix: prefix,
    resyncMs,
    logger: quiet,
    events: {
      synced: (e) => syncs.push({ ok: e.ok, trigger: e.trigger }),
      subscription: (s) => subscriptions.push(s),
      changeApplied: () => {},
    },
  });
  store.start();
  stores.push(store);
  return { store, syncs, subscriptions };
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

// Stopping the server needs a redis-server this process started (not REDIS_URL).
describe.skipIf(Boolean(process.env.REDIS_URL))('RedisAccountStore while Redis is down', () => {
  it('keeps deciding from its last state, says it lost the subscription, and resyncs when Redis is back', async () => {
    const control = redis.control;
    if (!control) throw new Error(`no outage controls for a Redis from ${redis.source}`);
    const p = prefix();
    await writeAccountChange(writer, p, { uid: 'ivan', field: 'disabled', value: true });
    const { store, syncs } = startStore(p, 300);
    await until('loaded and subscribed', () => store.loaded && store.subscribed);

    await control.down();
    try {
      await until('the lost subscription', () => !store.subscribed);
      // Scheduled resyncs fail meanwhile; the state stays.
      await until('a failed resync', () => syncs.some((s) => !s.ok));
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
