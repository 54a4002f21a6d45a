import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, loadConfig } from './config';
import {
  redisEnvFields,
  redisNodeOptions,
  redisSettingsOf,
  redisVariables,
  resolveRedisTopology,
} from './redis-topology';

// The shared parser's own behaviour; each service's config.test.ts covers its variables' refusals.

describe('redisEnvFields and redisSettingsOf', () => {
  it("declares the prefix's variables and reads them back", () => {
    const schema = z.object({ X_REDIS_URL: z.string(), ...redisEnvFields('X', ['standalone', 'sentinel']) });
    expect(Object.keys(schema.shape).sort()).toEqual([...Object.values(redisVariables('X'))].sort());
    const config = loadConfig(schema, {
      X_REDIS_URL: 'redis://s1',
      X_REDIS_MODE: 'sentinel',
      X_REDIS_SENTINEL_MASTER: 'm',
      X_REDIS_PASSWORD: 'pw',
    });
    expect(redisSettingsOf(config, 'X', config.X_REDIS_URL)).toMatchObject({
      url: 'redis://s1',
      mode: 'sentinel',
      sentinelMaster: 'm',
      password: 'pw',
      username: undefined,
    });
    expect(() => loadConfig(schema, { X_REDIS_URL: 'redis://a', X_REDIS_MODE: 'cluster' })).toThrow(/X_REDIS_MODE/);
  });
});

describe('resolveRedisTopology', () => {
  it('refuses a mode the service does not support, with its reason, naming its own variable', () => {
    const attempt = () =>
      resolveRedisTopology({ url: 'redis://a', mode: 'cluster' }, 'SVC', {
        modes: ['standalone', 'sentinel'],
        unsupported: 'one master holds the state',
      });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(
      'SVC_REDIS_MODE: cluster is not supported here (standalone or sentinel): one master holds the state',
    );
  });

  it('names only the modes the service has when several URLs are given in standalone mode', () => {
    expect(() =>
      resolveRedisTopology({ url: 'redis://a,redis://b', mode: 'standalone' }, 'SVC', {
        modes: ['standalone', 'sentinel'],
      }),
    ).toThrow('SVC_REDIS_URL: one URL expected in standalone mode (set SVC_REDIS_MODE=sentinel for several)');
  });
});

describe('redisNodeOptions', () => {
  it('gives a standalone server its host, port, db and credentials', () => {
    const topology = resolveRedisTopology({ url: 'redis://u:p@h:7000/2', mode: 'standalone' }, 'S');
    expect(redisNodeOptions(topology)).toEqual({ host: 'h', port: 7000, db: 2, username: 'u', password: 'p' });
  });

  it('gives Sentinel the sentinels, the master name, both credentials and TLS to both', () => {
    const topology = {
      mode: 'sentinel' as const,
      endpoints: [{ host: 's1', port: 26379 }],
      db: 0,
      username: 'data',
      password: 'data-pw',
      sentinel: { masterName: 'm', username: 'watch', password: 'watch-pw' },
      tls: { ca: '-----BEGIN CERTIFICATE-----', serverName: 'redis.internal' },
    };
    const tls = { ca: '-----BEGIN CERTIFICATE-----', servername: 'redis.internal' };
    expect(redisNodeOptions(topology)).toEqual({
      sentinels: [{ host: 's1', port: 26379 }],
      name: 'm',
      role: 'master',
      db: 0,
      username: 'data',
      password: 'data-pw',
      sentinelUsername: 'watch',
      sentinelPassword: 'watch-pw',
      tls,
      enableTLSForSentinelMode: true,
      sentinelTLS: tls,
      failoverDetector: false,
    });
  });

  it('gives a cluster node only the credentials and TLS (the seeds are the Cluster constructor’s)', () => {
    const topology = resolveRedisTopology({ url: 'redis://u:p@n1,redis://u:p@n2', mode: 'cluster' }, 'S');
    expect(redisNodeOptions(topology)).toEqual({ username: 'u', password: 'p' });
  });
});
