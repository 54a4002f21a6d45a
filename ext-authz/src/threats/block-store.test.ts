import { randomUUID } from 'node:crypto';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import { resolveRedisTopology } from '@sekisho/service-kit/redis-topology';
import type { ThreatBlock } from '@sekisho/service-kit/threat-contract';
import { defineThreatScripts, putBlock } from '@sekisho/threat-detector/redis-store';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisThreatStore, readBlocks, removeBlock } from './block-store';

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
