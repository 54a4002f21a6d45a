import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { findOnPath } from './host';
import { waitUntil } from './processes';
import { type RedisHandle, redisCli, startRedis, startSecureRedis } from './redis';
import { startTraffic, writeRedisTlsFiles } from './redis-failover';

const hasRedisServer = findOnPath('redis-server') !== undefined && findOnPath('redis-cli') !== undefined;

describe.skipIf(!hasRedisServer)('the failover test helpers', () => {
  let redis: RedisHandle | undefined;
  afterEach(async () => {
    await redis?.stop();
    redis = undefined;
  });

  it('records every call through an outage, a refusal with its error, and counts decisions from a position', async () => {
    const handle = await startRedis({ env: { PATH: process.env.PATH } });
    redis = handle;
    const control = handle.control;
    if (!control) throw new Error('a spawned redis-server has outage controls');
    // No queue and no retries: during the outage a call is refused at once.
    const client = new Redis(handle.url, {
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => 50,
    });
    client.on('error', () => {});
    const traffic = startTraffic(() => client.incr('calls'));
    try {
      await traffic.decided(0, 5, 20_000);
      await control.down();
      await waitUntil('a refused call', 20_000, {}, async () =>
        traffic.outcomes.some((o) => !o.ok) ? { done: true, value: undefined } : { done: false, detail: 'none yet' },
      );
      await control.up();
      const from = traffic.outcomes.length;
      await traffic.decided(from, 3, 20_000);
      expect(traffic.outcomes.slice(from).filter((o) => o.ok).length).toBeGreaterThanOrEqual(3);
    } finally {
      await traffic.stop();
      client.disconnect();
    }
    const refused = traffic.outcomes.filter((o) => !o.ok);
    expect(refused.length).toBeGreaterThan(0);
    for (const o of refused) expect(o.ok === false && o.error).toBeInstanceOf(Error);
    // After the restart (an empty server) the count starts again: each value is what Redis answered.
    const values = traffic.outcomes.flatMap((o) => (o.ok ? [o.value] : []));
    expect(values.slice(0, 5)).toEqual([1, 2, 3, 4, 5]);
    expect(values.at(-1)).toBeLessThan(values.length);
  }, 60_000);

  it('counts only the values isDecision accepts, and says so when they do not come', async () => {
    const traffic = startTraffic(async (i) => i, { intervalMs: 1, isDecision: (i) => i % 3 === 0 });
    try {
      await traffic.decided(0, 4);
      expect(traffic.outcomes.length).toBeGreaterThanOrEqual(10);
    } finally {
      await traffic.stop();
    }
    const never = startTraffic(async () => Promise.reject(Object.assign(new Error('down'), { code: 'REDIS_DOWN' })), {
      intervalMs: 1,
    });
    try {
      await expect(never.decided(0, 1, 300)).rejects.toThrow(/0 so far of \d+; last failure REDIS_DOWN: down/);
    } finally {
      await never.stop();
    }
  });

  it('writes TLS files a TLS-only redis-server serves and redis-cli trusts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-redis-tls-files-'));
    try {
      const tls = await writeRedisTlsFiles(dir);
      const server = await startSecureRedis({ tls });
      try {
        expect(server.url).toMatch(/^rediss:\/\/127\.0\.0\.1:\d+$/);
        expect(await redisCli(server.node.port, ['ping'], { tls })).toBe('PONG');
        const plain = await redisCli(server.node.port, ['ping'], { timeoutMs: 3_000 }).catch((e: Error) => e.message);
        expect(plain).not.toBe('PONG');
      } finally {
        await server.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
