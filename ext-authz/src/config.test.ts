import { execFile } from 'node:child_process';
import { repoRoot } from '@sekisho/devstack/paths';
import { ConfigError } from '@sekisho/service-kit/config';
import { describe, expect, it } from 'vitest';
import { loadExtAuthzConfig } from './config';
import { GOOGLE_SECURETOKEN_X509_URL } from './firebase/key-store';

describe('loadExtAuthzConfig', () => {
  it('refuses plaintext policy from a control plane off this host unless told so', () => {
    expect(() => loadExtAuthzConfig({ EXT_AUTHZ_XDS_ADDRESS: '10.0.0.5:18000' })).toThrow(
      /EXT_AUTHZ_XDS_ADDRESS: 10\.0\.0\.5:18000 is not a loopback address/,
    );
    expect(
      loadExtAuthzConfig({ EXT_AUTHZ_XDS_ADDRESS: '10.0.0.5:18000', EXT_AUTHZ_XDS_ALLOW_INSECURE: 'true' }),
    ).toMatchObject({ EXT_AUTHZ_XDS_ALLOW_INSECURE: true });
    expect(() => loadExtAuthzConfig({ EXT_AUTHZ_XDS_CERT_FILE: '/nope.crt', EXT_AUTHZ_XDS_KEY_FILE: '/k' })).toThrow(
      /EXT_AUTHZ_XDS_CA_FILE: required with EXT_AUTHZ_XDS_CERT_FILE and EXT_AUTHZ_XDS_KEY_FILE/,
    );
  });

  it('defaults to Google, loopback and the documented ports', () => {
    expect(loadExtAuthzConfig({})).toEqual({
      EXT_AUTHZ_HOST: '127.0.0.1',
      EXT_AUTHZ_GRPC_PORT: 9001,
      EXT_AUTHZ_ADMIN_PORT: 9101,
      EXT_AUTHZ_XDS_ADDRESS: '127.0.0.1:18000',
      EXT_AUTHZ_XDS_ALLOW_INSECURE: false,
      EXT_AUTHZ_NODE_ID: 'ext-authz',
      EXT_AUTHZ_FIREBASE_CERTS_URL: GOOGLE_SECURETOKEN_X509_URL,
      EXT_AUTHZ_KEYS_ALLOW_HTTP: false,
      EXT_AUTHZ_CLOCK_TOLERANCE: 5_000,
      EXT_AUTHZ_KEYS_FETCH_TIMEOUT: 5_000,
      EXT_AUTHZ_KEYS_UNKNOWN_KID_INTERVAL: 30_000,
      EXT_AUTHZ_KEYS_MAX_STALE: 86_400_000,
      EXT_AUTHZ_TOKEN_CACHE_SIZE: 10_000,
      EXT_AUTHZ_DENIAL_LOG_PER_CLIENT: 20,
      EXT_AUTHZ_DENIAL_LOG_PER_CAUSE: 1_000,
      EXT_AUTHZ_DENIAL_LOG_WINDOW: 60_000,
      EXT_AUTHZ_ACCOUNTS_RESYNC: 30_000,
      EXT_AUTHZ_ACCOUNTS_KEY_PREFIX: 'sekisho:accounts',
      EXT_AUTHZ_REVOCATION_RETENTION: 7_200_000,
      EXT_AUTHZ_REVOCATION_PRUNE_INTERVAL: 300_000,
      EXT_AUTHZ_THREATS: true,
      EXT_AUTHZ_THREATS_KEY_PREFIX: 'sekisho:threats',
      EXT_AUTHZ_THREATS_RESYNC: 10_000,
      EXT_AUTHZ_LIMITS_REDIS_TIMEOUT: 50,
      EXT_AUTHZ_LIMITS_REDIS_FAILURE_MODE: 'allow',
      EXT_AUTHZ_LIMITS_HEADERS: 'draft-10',
      EXT_AUTHZ_LIMITS_LEASE: 0.01,
      EXT_AUTHZ_LIMITS_LEASE_MAX: 100,
      EXT_AUTHZ_REDIS_MODE: 'standalone',
      LOG_LEVEL: 'info',
      redis: undefined,
    });
  });

  it.each([
    ['EXT_AUTHZ_FIREBASE_CERTS_URL', 'file:///etc/keys.json'],
    ['EXT_AUTHZ_CLOCK_TOLERANCE', '10m'],
    ['EXT_AUTHZ_KEYS_FETCH_TIMEOUT', '0ms'],
    ['EXT_AUTHZ_KEYS_UNKNOWN_KID_INTERVAL', '10ms'],
    ['EXT_AUTHZ_TOKEN_CACHE_SIZE', '-1'],
    ['EXT_AUTHZ_GRPC_PORT', 'ninety'],
    ['EXT_AUTHZ_DENIAL_LOG_PER_CLIENT', '0'],
    ['EXT_AUTHZ_DENIAL_LOG_PER_CAUSE', 'many'],
    ['EXT_AUTHZ_LIMITS_REDIS_FAILURE_MODE', 'sometimes'],
    ['EXT_AUTHZ_LIMITS_KEY_SECRET', 'short'],
    ['EXT_AUTHZ_LIMITS_HEADERS', 'draft-99'],
    ['EXT_AUTHZ_LIMITS_LEASE', '0.01'],
    ['EXT_AUTHZ_LIMITS_LEASE', '60%'],
    ['EXT_AUTHZ_LIMITS_LEASE', '-1%'],
    ['EXT_AUTHZ_LIMITS_LEASE_MAX', '0'],
    ['EXT_AUTHZ_DENIAL_LOG_WINDOW', '10ms'],
    ['EXT_AUTHZ_ACCOUNTS_RESYNC', 'often'],
    ['EXT_AUTHZ_ACCOUNTS_RESYNC', '10ms'],
    ['EXT_AUTHZ_ACCOUNTS_KEY_PREFIX', 'has space'],
    ['EXT_AUTHZ_REVOCATION_RETENTION', '1h'],
    ['EXT_AUTHZ_REVOCATION_RETENTION', 'forever'],
    ['EXT_AUTHZ_REVOCATION_PRUNE_INTERVAL', '10ms'],
  ])('refuses %s=%s, naming the variable', (variable, value) => {
    const attempt = () => loadExtAuthzConfig({ [variable]: value });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(variable);
  });

  it.each([
    ['0%', 0],
    ['0.5%', 0.005],
    ['2%', 0.02],
    ['50%', 0.5],
  ])('reads EXT_AUTHZ_LIMITS_LEASE=%s as a share of %s', (text, share) => {
    expect(loadExtAuthzConfig({ EXT_AUTHZ_LIMITS_LEASE: text }).EXT_AUTHZ_LIMITS_LEASE).toBe(share);
  });

  it('refuses an http keys URL unless the development setting allows it', () => {
    const url = 'http://127.0.0.1:9999/keys';
    const attempt = () => loadExtAuthzConfig({ EXT_AUTHZ_FIREBASE_CERTS_URL: url });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(/EXT_AUTHZ_FIREBASE_CERTS_URL.*must be https.*EXT_AUTHZ_KEYS_ALLOW_HTTP=true/);
    expect(loadExtAuthzConfig({ EXT_AUTHZ_FIREBASE_CERTS_URL: url, EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true' })).toMatchObject({
      EXT_AUTHZ_FIREBASE_CERTS_URL: url,
      EXT_AUTHZ_KEYS_ALLOW_HTTP: true,
    });
    expect(() => loadExtAuthzConfig({ EXT_AUTHZ_KEYS_ALLOW_HTTP: 'yes' })).toThrow('EXT_AUTHZ_KEYS_ALLOW_HTTP');
  });

  it('keeps a revocation at least a token lifetime plus the clock tolerance', () => {
    expect(loadExtAuthzConfig({ EXT_AUTHZ_REVOCATION_RETENTION: '3605s' }).EXT_AUTHZ_REVOCATION_RETENTION).toBe(
      3_605_000,
    );
    const short = () =>
      loadExtAuthzConfig({ EXT_AUTHZ_REVOCATION_RETENTION: '3605s', EXT_AUTHZ_CLOCK_TOLERANCE: '10s' });
    expect(short).toThrow(/EXT_AUTHZ_REVOCATION_RETENTION: must be at least 1h .*plus EXT_AUTHZ_CLOCK_TOLERANCE/);
  });

  it('takes the Auth emulator mode outside production, and refuses it with NODE_ENV=production', () => {
    expect(loadExtAuthzConfig({ EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: '127.0.0.1:9099' })).toMatchObject({
      EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: '127.0.0.1:9099',
    });
    const production = () =>
      loadExtAuthzConfig({ EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: '127.0.0.1:9099', NODE_ENV: 'production' });
    expect(production).toThrow(ConfigError);
    expect(production).toThrow(/EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: .*unsigned tokens.*NODE_ENV=production/);
    expect(() => loadExtAuthzConfig({ EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: 'localhost' })).toThrow(
      'EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST',
    );
    // Production without the mode is fine.
    expect(loadExtAuthzConfig({ NODE_ENV: 'production' }).EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST).toBeUndefined();
  });

  it('makes ext-authz exit at start with the message when the emulator mode meets NODE_ENV=production', async () => {
    const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', 'ext-authz/src/main.ts'],
        {
          cwd: repoRoot,
          timeout: 30_000,
          env: {
            PATH: process.env.PATH,
            NODE_ENV: 'production',
            EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: '127.0.0.1:9099',
          },
        },
        (error, _stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stderr }),
      );
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST');
    expect(result.stderr).toContain('refused with NODE_ENV=production');
  });
});

describe('the Redis topology (EXT_AUTHZ_REDIS_*, service-kit/redis-topology)', () => {
  it('reads a standalone URL with its ACL user, and a Sentinel setup with credentials for both', () => {
    expect(loadExtAuthzConfig({ EXT_AUTHZ_REDIS_URL: 'redis://authz:p%40ss@redis.internal:6380/3' }).redis).toEqual({
      mode: 'standalone',
      endpoints: [{ host: 'redis.internal', port: 6380 }],
      db: 3,
      username: 'authz',
      password: 'p@ss',
    });
    expect(
      loadExtAuthzConfig({
        EXT_AUTHZ_REDIS_MODE: 'sentinel',
        EXT_AUTHZ_REDIS_URL: 'redis://s1,redis://s2:26380',
        EXT_AUTHZ_REDIS_SENTINEL_MASTER: 'sekisho',
        EXT_AUTHZ_REDIS_USERNAME: 'authz',
        EXT_AUTHZ_REDIS_PASSWORD: 'data-secret',
        EXT_AUTHZ_REDIS_SENTINEL_USERNAME: 'watcher',
        EXT_AUTHZ_REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
      }).redis,
    ).toEqual({
      mode: 'sentinel',
      endpoints: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
      ],
      db: 0,
      username: 'authz',
      password: 'data-secret',
      sentinel: { masterName: 'sekisho', username: 'watcher', password: 'sentinel-secret' },
    });
  });

  it.each([
    [
      'an http URL',
      { EXT_AUTHZ_REDIS_URL: 'http://127.0.0.1:6379' },
      'EXT_AUTHZ_REDIS_URL',
      /redis:\/\/ or rediss:\/\//,
    ],
    ['no scheme', { EXT_AUTHZ_REDIS_URL: '127.0.0.1:6379' }, 'EXT_AUTHZ_REDIS_URL', /redis:\/\/|not a URL/],
    [
      'cluster (the state lives on one master)',
      { EXT_AUTHZ_REDIS_MODE: 'cluster', EXT_AUTHZ_REDIS_URL: 'redis://a,redis://b' },
      'EXT_AUTHZ_REDIS_MODE',
      /cluster is not supported here \(standalone or sentinel\): .*one master/,
    ],
    [
      'sentinel without the master name',
      { EXT_AUTHZ_REDIS_MODE: 'sentinel', EXT_AUTHZ_REDIS_URL: 'redis://s1' },
      'EXT_AUTHZ_REDIS_SENTINEL_MASTER',
      /required with EXT_AUTHZ_REDIS_MODE=sentinel/,
    ],
    [
      'a sentinel password in standalone mode',
      { EXT_AUTHZ_REDIS_URL: 'redis://a', EXT_AUTHZ_REDIS_SENTINEL_PASSWORD: 'x' },
      'EXT_AUTHZ_REDIS_SENTINEL_PASSWORD',
      /only with EXT_AUTHZ_REDIS_MODE=sentinel/,
    ],
    [
      'a CA file for redis://',
      { EXT_AUTHZ_REDIS_URL: 'redis://a', EXT_AUTHZ_REDIS_TLS_CA_FILE: '/etc/ca.pem' },
      'EXT_AUTHZ_REDIS_TLS_CA_FILE',
      /rediss/,
    ],
    [
      'a CA file that is not there',
      { EXT_AUTHZ_REDIS_URL: 'rediss://a', EXT_AUTHZ_REDIS_TLS_CA_FILE: '/nonexistent/ca.pem' },
      'EXT_AUTHZ_REDIS_TLS_CA_FILE',
      /ENOENT/,
    ],
    [
      'a user without a password',
      { EXT_AUTHZ_REDIS_URL: 'redis://a', EXT_AUTHZ_REDIS_USERNAME: 'authz' },
      'EXT_AUTHZ_REDIS_USERNAME',
      /needs a password/,
    ],
    [
      'settings without a URL',
      { EXT_AUTHZ_REDIS_MODE: 'sentinel', EXT_AUTHZ_REDIS_SENTINEL_MASTER: 'm' },
      'EXT_AUTHZ_REDIS_URL',
      /required when other EXT_AUTHZ_REDIS_\* settings are given/,
    ],
  ])('refuses %s, naming %s', (_case, env, variable, message) => {
    const attempt = () => loadExtAuthzConfig(env);
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(new RegExp(`${variable}: `));
    expect(attempt).toThrow(message);
  });

  it('never shows a password of the URL in an error', () => {
    const attempt = () => loadExtAuthzConfig({ EXT_AUTHZ_REDIS_URL: 'redis://u:hunter2-secret@a/x' });
    expect(attempt).toThrow(/EXT_AUTHZ_REDIS_URL/);
    expect(attempt).not.toThrow(/hunter2/);
  });
});
