import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { findOnPath } from './host';
import { type RedisHandle, startRedis } from './redis';

const hasRedisServer = findOnPath('redis-server') !== undefined;

function redisServersOnPort(url: string): string {
  const port = new URL(url).port;
  try {
    // redis-server rewrites its title to "redis-server 127.0.0.1:<port>".
    return execFileSync('pgrep', ['-af', `redis-server .*:${port}`], { encoding: 'utf8' }).trim();
  } catch {
    return ''; // pgrep exits 1 when nothing matches
  }
}

function connectTcp(url: string): Promise<void> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

function client(url: string): Redis {
  // No retries: a test must see an outage as an error, not as a hang.
  return new Redis(url, {
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    lazyConnect: true,
    retryStrategy: () => null,
  });
}

describe('startRedis', () => {
  let redis: RedisHandle | undefined;
  afterEach(async () => {
    await redis?.stop();
    redis = undefined;
  });

  it('uses REDIS_URL as given and does not own it', async () => {
    redis = await startRedis({ env: { REDIS_URL: 'redis://example.invalid:6390' } });
    expect(redis).toMatchObject({ url: 'redis://example.invalid:6390', source: 'REDIS_URL' });
    expect(redis.control).toBeUndefined();
  });

  it('lists every option in one error when nothing provides Redis', async () => {
    await expect(startRedis({ env: { PATH: '/nonexistent' }, dockerAvailable: async () => false })).rejects.toThrow(
      /REDIS_URL[\s\S]*apt-get install redis-server[\s\S]*Docker/,
    );
  });

  it.skipIf(!hasRedisServer)('starts a private redis-server that answers and leaves nothing behind', async () => {
    const handle = await startRedis({ env: { PATH: process.env.PATH } });
    redis = handle;
    expect(handle.source).toBe('redis-server');
    expect(handle.url).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    const c = client(handle.url);
    await c.connect();
    await c.set('k', 'v');
    expect(await c.get('k')).toBe('v');
    c.disconnect();
    expect(redisServersOnPort(handle.url)).not.toBe('');
    await handle.stop();
    expect(redisServersOnPort(handle.url)).toBe('');
  });

  it.skipIf(!hasRedisServer)('takes the server down and up again on the same URL, empty', async () => {
    const handle = await startRedis({ env: { PATH: process.env.PATH } });
    redis = handle;
    const control = handle.control;
    if (!control) throw new Error('a spawned redis-server has outage controls');
    const before = client(handle.url);
    await before.connect();
    await before.set('k', 'v');
    before.disconnect();

    await control.down();
    await expect(connectTcp(handle.url)).rejects.toThrow(/ECONNREFUSED/);

    await control.up();
    const after = client(handle.url);
    await after.connect();
    expect(await after.get('k')).toBeNull();
    after.disconnect();
    expect(handle.logs()).toMatch(/Ready to accept connections[\s\S]*Ready to accept connections/);
  });

  it.skipIf(!hasRedisServer)('pauses the server so commands time out, and resumes it', async () => {
    const handle = await startRedis({ env: { PATH: process.env.PATH } });
    redis = handle;
    const c = new Redis(handle.url, { commandTimeout: 300, maxRetriesPerRequest: 0 });
    try {
      expect(await c.ping()).toBe('PONG');
      handle.control?.pause();
      await expect(c.ping()).rejects.toThrow(/timed out/i);
      handle.control?.resume();
      expect(await c.ping()).toBe('PONG');
    } finally {
      c.disconnect();
    }
  });
});
