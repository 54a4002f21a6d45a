import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@sekisho/service-kit/config';
import { redisEnvFields } from '@sekisho/service-kit/redis-topology';
import { describe, expect, it } from 'vitest';
import { configSchema, loadRateLimitConfig } from './config';

describe('loadRateLimitConfig', () => {
  it('has the documented defaults', () => {
    expect(loadRateLimitConfig({})).toEqual({
      RATELIMIT_HOST: '127.0.0.1',
      RATELIMIT_GRPC_PORT: 9002,
      RATELIMIT_ADMIN_PORT: 9102,
      RATELIMIT_XDS_ADDRESS: '127.0.0.1:18000',
      RATELIMIT_XDS_ALLOW_INSECURE: false,
      RATELIMIT_NODE_ID: 'ratelimit-service',
      RATELIMIT_REDIS_URL: 'redis://127.0.0.1:6379',
      RATELIMIT_REDIS_MODE: 'standalone',
      RATELIMIT_REDIS_KEY_TAG: 'domain',
      redis: { mode: 'standalone', endpoints: [{ host: '127.0.0.1', port: 6379 }], db: 0 },
      RATELIMIT_REDIS_FAILURE_MODE: 'allow',
      RATELIMIT_LOCAL_REPLICAS: 1,
      RATELIMIT_LOCAL_MAX_KEYS: 100_000,
      RATELIMIT_LOCAL_CACHE_SIZE: 100_000,
      RATELIMIT_BREAKER_FAILURES: 5,
      RATELIMIT_BREAKER_OPEN_FOR: 2000,
      RATELIMIT_REDIS_TIMEOUT: 50,
      RATELIMIT_REDIS_BATCH_MAX: 4,
      RATELIMIT_CONFIG_POLL_INTERVAL: 5000,
      RATELIMIT_HEADERS: 'draft-10',
      LOG_LEVEL: 'info',
    });
  });

  it('needs no control plane when a configuration directory is given', () => {
    expect(loadRateLimitConfig({ RATELIMIT_CONFIG_DIR: '/etc/ratelimit' }).RATELIMIT_XDS_ADDRESS).toBeUndefined();
    expect(
      loadRateLimitConfig({
        RATELIMIT_CONFIG_DIR: '/etc/ratelimit',
        RATELIMIT_XDS_ADDRESS: 'cp:18000',
        RATELIMIT_XDS_ALLOW_INSECURE: 'true',
      }),
    ).toMatchObject({ RATELIMIT_CONFIG_DIR: '/etc/ratelimit', RATELIMIT_XDS_ADDRESS: 'cp:18000' });
  });

  it('refuses plaintext policy from a control plane off this host, naming the variables', () => {
    expect(() => loadRateLimitConfig({ RATELIMIT_XDS_ADDRESS: 'cp:18000' })).toThrow(
      /RATELIMIT_XDS_ADDRESS: cp:18000 is not a loopback address: set RATELIMIT_XDS_CA_FILE, RATELIMIT_XDS_CERT_FILE and RATELIMIT_XDS_KEY_FILE/,
    );
    expect(() => loadRateLimitConfig({ RATELIMIT_XDS_CA_FILE: '/ca.crt' })).toThrow(
      /RATELIMIT_XDS_CERT_FILE: required with RATELIMIT_XDS_CA_FILE[^\n]*\n\s*RATELIMIT_XDS_KEY_FILE: required/,
    );
  });

  it('parses durations and modes', () => {
    const config = loadRateLimitConfig({
      RATELIMIT_REDIS_TIMEOUT: '2s',
      RATELIMIT_REDIS_FAILURE_MODE: 'local',
      RATELIMIT_LOCAL_REPLICAS: '3',
      RATELIMIT_NO_POLICY_MODE: 'allow',
      RATELIMIT_REDIS_URL: 'rediss://:secret@redis.internal:6380/2',
    });
    expect(config).toMatchObject({
      RATELIMIT_REDIS_TIMEOUT: 2000,
      RATELIMIT_REDIS_FAILURE_MODE: 'local',
      RATELIMIT_LOCAL_REPLICAS: 3,
      RATELIMIT_NO_POLICY_MODE: 'allow',
      RATELIMIT_REDIS_URL: 'rediss://:secret@redis.internal:6380/2',
    });
  });

  it.each([
    ['RATELIMIT_REDIS_FAILURE_MODE', 'open'],
    ['RATELIMIT_REDIS_TIMEOUT', '50'],
    ['RATELIMIT_GRPC_PORT', '70000'],
    ['RATELIMIT_XDS_ADDRESS', 'no-port'],
    ['RATELIMIT_KEY_SECRET', 'short'],
    ['RATELIMIT_CONFIG_POLL_INTERVAL', 'often'],
    ['RATELIMIT_HEADERS', 'draft-99'],
    ['RATELIMIT_LOCAL_REPLICAS', '0'],
    ['RATELIMIT_LOCAL_REPLICAS', '1e3'],
    ['RATELIMIT_BREAKER_FAILURES', '-1'],
    ['RATELIMIT_BREAKER_OPEN_FOR', 'soon'],
    ['RATELIMIT_LOCAL_CACHE_SIZE', 'lots'],
    ['RATELIMIT_REDIS_BATCH_MAX', '0'],
  ])('names %s when its value %j is invalid', (variable, value) => {
    const attempt = () => loadRateLimitConfig({ [variable]: value });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(variable);
  });

  it.each([
    ['RATELIMIT_REDIS_MODE', 'replicated'],
    ['RATELIMIT_REDIS_KEY_TAG', 'user'],
  ])('names %s when its value %j is invalid', (variable, value) => {
    expect(() => loadRateLimitConfig({ [variable]: value })).toThrow(variable);
  });
});

describe('the Redis topology', () => {
  const topology = (env: Record<string, string>) => loadRateLimitConfig(env).redis;
  const refusal = (env: Record<string, string>) => {
    try {
      loadRateLimitConfig(env);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as ConfigError).problems;
    }
    throw new Error('accepted');
  };

  it('reads a standalone URL with its ACL user, password and database', () => {
    expect(topology({ RATELIMIT_REDIS_URL: 'redis://limiter:p%40ss@redis.internal:6380/2' })).toEqual({
      mode: 'standalone',
      endpoints: [{ host: 'redis.internal', port: 6380 }],
      db: 2,
      username: 'limiter',
      password: 'p@ss',
    });
  });

  it('reads a cluster from comma-separated seed nodes, credentials from the variables', () => {
    expect(
      topology({
        RATELIMIT_REDIS_MODE: 'cluster',
        RATELIMIT_REDIS_URL: 'redis://10.0.0.1:7000, redis://10.0.0.2:7001,redis://[::1]',
        RATELIMIT_REDIS_USERNAME: 'limiter',
        RATELIMIT_REDIS_PASSWORD: 'secret',
      }),
    ).toEqual({
      mode: 'cluster',
      endpoints: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: '::1', port: 6379 },
      ],
      db: 0,
      username: 'limiter',
      password: 'secret',
    });
  });

  it('reads sentinels (default port 26379), the master name and both sets of credentials', () => {
    expect(
      topology({
        RATELIMIT_REDIS_MODE: 'sentinel',
        RATELIMIT_REDIS_URL: 'redis://s1,redis://s2:26380',
        RATELIMIT_REDIS_SENTINEL_MASTER: 'ratelimit',
        RATELIMIT_REDIS_PASSWORD: 'data-secret',
        RATELIMIT_REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
      }),
    ).toEqual({
      mode: 'sentinel',
      endpoints: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
      ],
      db: 0,
      password: 'data-secret',
      sentinel: { masterName: 'ratelimit', password: 'sentinel-secret' },
    });
  });

  it('reads TLS material for rediss:// URLs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rl-config-'));
    const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    try {
      writeFileSync(join(dir, 'ca.pem'), pem);
      expect(
        topology({
          RATELIMIT_REDIS_URL: 'rediss://redis.internal:6380',
          RATELIMIT_REDIS_TLS_CA_FILE: join(dir, 'ca.pem'),
          RATELIMIT_REDIS_TLS_SERVER_NAME: 'redis.example',
        }).tls,
      ).toEqual({ ca: pem, serverName: 'redis.example' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each<[string, Record<string, string>, string, RegExp]>([
    [
      'a second URL in standalone mode',
      { RATELIMIT_REDIS_URL: 'redis://a,redis://b' },
      'RATELIMIT_REDIS_URL',
      /one URL/,
    ],
    ['an http URL', { RATELIMIT_REDIS_URL: 'http://a:6379' }, 'RATELIMIT_REDIS_URL', /redis:\/\/ or rediss:\/\//],
    ['no URL at all', { RATELIMIT_REDIS_URL: 'localhost' }, 'RATELIMIT_REDIS_URL', /not a URL/],
    [
      'a database path that is not a number',
      { RATELIMIT_REDIS_URL: 'redis://a/x' },
      'RATELIMIT_REDIS_URL',
      /database number/,
    ],
    [
      'a database on a cluster',
      { RATELIMIT_REDIS_MODE: 'cluster', RATELIMIT_REDIS_URL: 'redis://a/1' },
      'RATELIMIT_REDIS_URL',
      /standalone mode only/,
    ],
    ['query options', { RATELIMIT_REDIS_URL: 'redis://a?family=6' }, 'RATELIMIT_REDIS_URL', /query/],
    [
      'a malformed percent-encoded password',
      { RATELIMIT_REDIS_URL: 'redis://u:%zz@a' },
      'RATELIMIT_REDIS_URL',
      /percent-encoding/,
    ],
    [
      'mixed schemes',
      { RATELIMIT_REDIS_MODE: 'cluster', RATELIMIT_REDIS_URL: 'redis://a,rediss://b' },
      'RATELIMIT_REDIS_URL',
      /one scheme/,
    ],
    [
      'sentinel without a master name',
      { RATELIMIT_REDIS_MODE: 'sentinel', RATELIMIT_REDIS_URL: 'redis://s1' },
      'RATELIMIT_REDIS_SENTINEL_MASTER',
      /required/,
    ],
    [
      'a master name outside sentinel mode',
      { RATELIMIT_REDIS_SENTINEL_MASTER: 'm' },
      'RATELIMIT_REDIS_SENTINEL_MASTER',
      /only with RATELIMIT_REDIS_MODE=sentinel/,
    ],
    [
      'credentials in a sentinel URL',
      { RATELIMIT_REDIS_MODE: 'sentinel', RATELIMIT_REDIS_URL: 'redis://:pw@s1', RATELIMIT_REDIS_SENTINEL_MASTER: 'm' },
      'RATELIMIT_REDIS_URL',
      /RATELIMIT_REDIS_SENTINEL_PASSWORD/,
    ],
    [
      'credentials in two places',
      { RATELIMIT_REDIS_URL: 'redis://:pw@a', RATELIMIT_REDIS_PASSWORD: 'other' },
      'RATELIMIT_REDIS_PASSWORD',
      /one place/,
    ],
    ['a user without a password', { RATELIMIT_REDIS_USERNAME: 'u' }, 'RATELIMIT_REDIS_USERNAME', /password/],
    ['a CA file for redis://', { RATELIMIT_REDIS_TLS_CA_FILE: '/etc/ca.pem' }, 'RATELIMIT_REDIS_TLS_CA_FILE', /rediss/],
    [
      'a CA file that does not exist',
      { RATELIMIT_REDIS_URL: 'rediss://a', RATELIMIT_REDIS_TLS_CA_FILE: '/nonexistent/ca.pem' },
      'RATELIMIT_REDIS_TLS_CA_FILE',
      /cannot read "\/nonexistent\/ca.pem": ENOENT/,
    ],
    [
      'a client certificate without its key',
      { RATELIMIT_REDIS_URL: 'rediss://a', RATELIMIT_REDIS_TLS_CERT_FILE: '/nonexistent/c.pem' },
      'RATELIMIT_REDIS_TLS_CERT_FILE',
      /needs its key/,
    ],
    [
      'a sentinel user without a password',
      {
        RATELIMIT_REDIS_MODE: 'sentinel',
        RATELIMIT_REDIS_URL: 'redis://s1',
        RATELIMIT_REDIS_SENTINEL_MASTER: 'm',
        RATELIMIT_REDIS_SENTINEL_USERNAME: 'watcher',
      },
      'RATELIMIT_REDIS_SENTINEL_USERNAME',
      /^an ACL user needs a password \(RATELIMIT_REDIS_SENTINEL_PASSWORD\)$/,
    ],
    [
      'a sentinel password outside sentinel mode',
      { RATELIMIT_REDIS_SENTINEL_PASSWORD: 'pw' },
      'RATELIMIT_REDIS_SENTINEL_PASSWORD',
      /^applies only with RATELIMIT_REDIS_MODE=sentinel \(the mode is standalone\)$/,
    ],
    [
      'a server name for redis://',
      { RATELIMIT_REDIS_TLS_SERVER_NAME: 'redis.example' },
      'RATELIMIT_REDIS_TLS_SERVER_NAME',
      /^applies only to rediss:\/\/ URLs \(RATELIMIT_REDIS_URL uses redis:\/\/\)$/,
    ],
    [
      'several URLs in standalone mode, naming both modes that take several',
      { RATELIMIT_REDIS_URL: 'redis://a,redis://b' },
      'RATELIMIT_REDIS_URL',
      /^one URL expected in standalone mode \(set RATELIMIT_REDIS_MODE=cluster or sentinel for several\)$/,
    ],
  ])('refuses %s, naming the variable', (_case, env, variable, message) => {
    const problems = refusal(env);
    expect(problems).toContainEqual({ variable, message: expect.stringMatching(message) });
  });

  // The schema's own fields are service-kit's (redisEnvFields), as ext-authz's and the threat
  // detector's: an empty value is refused by the schema itself, not only dropped by loadConfig.
  it.each([
    'RATELIMIT_REDIS_URL',
    'RATELIMIT_REDIS_SENTINEL_MASTER',
    'RATELIMIT_REDIS_PASSWORD',
    'RATELIMIT_REDIS_TLS_CA_FILE',
    'RATELIMIT_REDIS_TLS_SERVER_NAME',
  ])('refuses an empty %s given to the schema directly', (variable) => {
    const parsed = configSchema.safeParse({ [variable]: '' });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.map((issue) => issue.path[0])).toEqual([variable]);
  });

  it('has exactly the shared Redis variables, besides its own', () => {
    const shared = Object.keys(redisEnvFields('RATELIMIT', ['standalone', 'sentinel', 'cluster']));
    const own = Object.keys(configSchema.shape).filter((key) => key.startsWith('RATELIMIT_REDIS_'));
    expect(own.sort()).toEqual(
      [
        ...shared,
        'RATELIMIT_REDIS_URL',
        'RATELIMIT_REDIS_KEY_TAG',
        'RATELIMIT_REDIS_FAILURE_MODE',
        'RATELIMIT_REDIS_TIMEOUT',
        'RATELIMIT_REDIS_BATCH_MAX',
      ].sort(),
    );
  });

  it('never shows a password in a refusal', () => {
    const problems = refusal({
      RATELIMIT_REDIS_URL: 'redis://u:hunter2-secret@a/x',
      RATELIMIT_REDIS_PASSWORD: 'p4ss-word',
    });
    expect(problems.length).toBeGreaterThan(0);
    expect(JSON.stringify(problems)).not.toMatch(/hunter2-secret|p4ss-word/);
  });
});
