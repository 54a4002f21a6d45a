import { randomUUID } from 'node:crypto';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import { resolveRedisTopology } from '@sekisho/service-kit/redis-topology';
import { deviceHash, type ThreatBlock, threatKeys } from '@sekisho/service-kit/threat-contract';
import { defineThreatScripts, putBlock } from '@sekisho/threat-detector/redis-store';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisThreatStore, readBlocks, removeBlock, setTrustedDevice } from './block-store';

// The replica's copy of the detector's blocks against a real redis-server: the detector's own
// writer puts blocks in, the admin command's removeBlock lifts them.

let redis: RedisHandle;
let writer: Redis;
const stores: RedisThreatStore[] = [];

beforeAll(async () => {
  redis = await startRedis();
  writer = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  writer.on('error', () => {});
  defineThreatScripts(writer);
});

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
});

afterAll(async () => {
  writer?.disconnect();
  await redis?.stop();
});

const quiet = createLogger('ext-authz', { level: 'silent' });
const prefix = () => `test:${randomUUID()}`;

async function startStore(keyPrefix: string, resyncMs = 60_000) {
  const store = new RedisThreatStore({
    redis: resolveRedisTopology({ url: redis.url, mode: 'standalone' }, 'EXT_AUTHZ'),
    keyPrefix,
    resyncMs,
    logger: quiet,
  });
  store.start();
  stores.push(store);
  await waitFor('the first load', () => store.loaded);
  return store;
}

const waitFor = (what: string, condition: () => boolean) =>
  waitUntil(what, 5_000, {}, async () =>
    condition() ? { done: true, value: undefined } : { done: false, detail: 'not yet' },
  );

const ipBlock = (subject: string, untilMs = Date.now() + 3_600_000): ThreatBlock => ({
  kind: 'ip',
  subject,
  rule: 'brute_force',
  severity: 'high',
  untilMs,
});

describe('RedisThreatStore', () => {
  it('sees a block on two replicas through the channel, and its lifting', async () => {
    const keys = prefix();
    const [a, b] = [await startStore(keys), await startStore(keys)];
    await waitFor('both subscribed', () => a.subscribed && b.subscribed);
    expect(await putBlock(writer, keys, ipBlock('198.51.100.1'))).toBe(true);
    await waitFor('both replicas to refuse the IP', () =>
      [a, b].every((store) => store.ipRefusal('198.51.100.1', Date.now())?.code === 'IP_BLOCKED'),
    );
    expect(await removeBlock(writer, keys, 'ip:198.51.100.1')).toBe(true);
    await waitFor('both replicas to serve it again', () =>
      [a, b].every((store) => store.ipRefusal('198.51.100.1', Date.now()) === undefined),
    );
    expect(await removeBlock(writer, keys, 'ip:198.51.100.1')).toBe(false);
  });

  it('loads the blocks in force at start (a restarted replica keeps them), not the expired ones', async () => {
    const keys = prefix();
    await putBlock(writer, keys, ipBlock('198.51.100.2'));
    await putBlock(writer, keys, ipBlock('198.51.100.3', Date.now() - 1));
    const store = await startStore(keys);
    expect(store.ipRefusal('198.51.100.2', Date.now())?.code).toBe('IP_BLOCKED');
    expect(store.ipRefusal('198.51.100.3', Date.now())).toBeUndefined();
    expect((await readBlocks(writer, keys, Date.now())).blocks.map((block) => block.subject)).toEqual(['198.51.100.2']);
  });

  it('keeps a longer block when a shorter one for the same subject comes later', async () => {
    const keys = prefix();
    const until = Date.now() + 3_600_000;
    expect(await putBlock(writer, keys, ipBlock('198.51.100.4', until))).toBe(true);
    expect(await putBlock(writer, keys, ipBlock('198.51.100.4', until - 60_000))).toBe(false);
    expect((await readBlocks(writer, keys, Date.now())).blocks[0]?.untilMs).toBe(until);
  });

  it('skips a record that does not parse, and keeps enforcing the blocks it holds while Redis is down', async () => {
    if (!redis.control) throw new Error('this test needs a spawned redis-server (unset REDIS_URL)');
    const keys = prefix();
    await putBlock(writer, keys, ipBlock('198.51.100.5'));
    await writer.zadd(`${keys}:blocks:index`, Date.now() + 60_000, 'ip:junk');
    await writer.hset(`${keys}:blocks:records`, 'ip:junk', '{"kind":"ip"}');
    const store = await startStore(keys, 100);
    expect(store.ipRefusal('198.51.100.5', Date.now())?.code).toBe('IP_BLOCKED');
    expect(store.status().blocks_in_force).toBe(1);
    await redis.control.down();
    try {
      await waitFor('the subscription to drop', () => !store.subscribed);
      await store.sync();
      expect(store.ipRefusal('198.51.100.5', Date.now())?.code).toBe('IP_BLOCKED');
    } finally {
      await redis.control.up();
    }
  });
});

describe('setTrustedDevice', () => {
  const authState = (subject: string, devices: string[] = []): ThreatBlock => ({
    kind: 'auth',
    subject,
    rule: 'geo_anomaly',
    severity: 'medium',
    untilMs: Date.now() + 3_600_000,
    authTimeS: Math.floor(Date.now() / 1000),
    devices,
  });
  const devicesOf = (count: number) =>
    Array.from({ length: count }, (_, n) => `device-of-dora-${String(n).padStart(4, '0')}`);

  // Several connections, so the calls of one round really interleave in Redis.
  let clients: Redis[] = [];
  beforeAll(() => {
    clients = Array.from({ length: 6 }, () => {
      const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
      client.on('error', () => {});
      defineThreatScripts(client);
      return client;
    });
  });
  afterAll(() => {
    for (const client of clients) client.disconnect();
  });

  /** The state's record (undefined when absent), the index entry and the trusted set, read at once. */
  async function stored(keys: string, uid: string) {
    const k = threatKeys(keys);
    const [record, score, set] = await Promise.all([
      writer.hget(k.records, `auth:${uid}`),
      writer.zscore(k.index, `auth:${uid}`),
      writer.smembers(k.devices(uid)),
    ]);
    const parsed = record === null ? undefined : (JSON.parse(record) as ThreatBlock);
    return { record: parsed, indexed: score !== null, set: set.sort() };
  }

  it('stores the hash and rewrites the state in force, and says when there was none', async () => {
    const keys = prefix();
    const store = await startStore(keys);
    expect(await setTrustedDevice(writer, keys, 'dora', 'device-of-dora-0001', true)).toEqual({ stateUpdated: false });
    expect((await stored(keys, 'dora')).set).toEqual([deviceHash('device-of-dora-0001')]);
    await putBlock(writer, keys, authState('dora'));
    expect(await setTrustedDevice(writer, keys, 'dora', 'device-of-dora-0002', true)).toEqual({ stateUpdated: true });
    expect((await stored(keys, 'dora')).record).toMatchObject({
      kind: 'auth',
      subject: 'dora',
      rule: 'geo_anomaly',
      devices: [deviceHash('device-of-dora-0001'), deviceHash('device-of-dora-0002')].sort(),
    });
    await waitFor(
      'the replica to see both devices',
      () => store.table.authState('dora', Date.now())?.devices.length === 2,
    );
    expect(await setTrustedDevice(writer, keys, 'dora', 'device-of-dora-0001', false)).toEqual({ stateUpdated: true });
    expect((await stored(keys, 'dora')).record).toMatchObject({ devices: [deviceHash('device-of-dora-0002')] });
  });

  /**
   * Runs `calls` on every client at once, each client's in sequence; before each call a client
   * sends 0-3 PINGs (by its index and the call's), so the Redis commands of one client's call
   * land between those of another's rather than in lockstep.
   */
  async function staggered(calls: number, call: (client: Redis, n: number, i: number) => Promise<unknown>) {
    await Promise.all(
      clients.map(async (client, n) => {
        for (let i = 0; i < calls; i++) {
          for (let pings = (n * 7 + i * 3) % 4; pings > 0; pings--) await client.ping();
          await call(client, n, i);
        }
      }),
    );
  }

  it('ends with the state holding exactly the trusted set after concurrent trust and untrust calls', async () => {
    const keys = prefix();
    await putBlock(writer, keys, authState('dora'));
    const ids = devicesOf(3);
    // Meanwhile a reader takes snapshots of both in one MULTI: at no moment may they differ.
    const k = threatKeys(keys);
    const disagreements: Array<{ record: string[]; set: string[] }> = [];
    let running = true;
    const watching = (async () => {
      while (running) {
        const [[, text], [, set]] = (await writer
          .multi()
          .hget(k.records, 'auth:dora')
          .smembers(k.devices('dora'))
          .exec()) as [[null, string], [null, string[]]];
        const record = (JSON.parse(text) as { devices: string[] }).devices;
        if (record.join() !== set.sort().join()) disagreements.push({ record, set });
      }
    })();
    await staggered(60, (client, n, i) =>
      setTrustedDevice(client, keys, 'dora', ids[(n + i) % ids.length] as string, n % 2 === 0),
    );
    running = false;
    await watching;
    expect(disagreements).toEqual([]);
    const { record, set } = await stored(keys, 'dora');
    expect(record?.kind === 'auth' && record.devices).toEqual(set);
  });

  it('never brings back a state that a concurrent unblock lifted', async () => {
    const keys = prefix();
    const ids = devicesOf(5);
    for (let round = 0; round < 20; round++) {
      await putBlock(writer, keys, authState('dora'));
      await staggered(3, (client, n, i) =>
        n === 0 && i === 1
          ? removeBlock(client, keys, 'auth:dora')
          : setTrustedDevice(client, keys, 'dora', ids[n % ids.length] as string, (round + i) % 2 === 0),
      );
      const { record, indexed } = await stored(keys, 'dora');
      expect({ record, indexed }).toEqual({ record: undefined, indexed: false });
    }
  });

  it('gives a state the detector puts the trusted set as Redis holds it, whatever the block carried', async () => {
    const keys = prefix();
    await setTrustedDevice(writer, keys, 'dora', 'device-of-dora-0003', true);
    await writer.sadd(threatKeys(keys).devices('dora'), 'not-a-hash');
    expect(await putBlock(writer, keys, authState('dora', [deviceHash('device-of-dora-9999')]))).toBe(true);
    const store = await startStore(keys);
    expect(store.table.authState('dora', Date.now())?.devices).toEqual([deviceHash('device-of-dora-0003')]);
    expect((await stored(keys, 'dora')).record).toMatchObject({ devices: [deviceHash('device-of-dora-0003')] });
  });

  it('puts an empty list, not an object, in a state whose user has no trusted device', async () => {
    const keys = prefix();
    await putBlock(writer, keys, authState('dora'));
    await setTrustedDevice(writer, keys, 'dora', 'device-of-dora-0004', true);
    await setTrustedDevice(writer, keys, 'dora', 'device-of-dora-0004', false);
    const text = await writer.hget(threatKeys(keys).records, 'auth:dora');
    expect(JSON.parse(text ?? '{}')).toMatchObject({ devices: [] });
    expect((await readBlocks(writer, keys, Date.now())).skipped).toBe(0);
  });
});
