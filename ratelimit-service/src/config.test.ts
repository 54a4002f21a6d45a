import { ConfigError } from '@sekisho/service-kit/config';
import { describe, expect, it } from 'vitest';
import { loadRateLimitConfig } from './config';

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
      RATELIMIT_REDIS_FAILURE_MODE: 'allow',
      RATELIMIT_LOCAL_REPLICAS: 1,
      RATELIMIT_LOCAL_MAX_KEYS: 100_000,
      RATELIMIT_LOCAL_CACHE_SIZE: 100_000,
      RATELIMIT_BREAKER_FAILURES: 5,
      RATELIMIT_BREAKER_OPEN_FOR: 2000,
      RATELIMIT_REDIS_TIMEOUT: 50,
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
  ])('names %s when its value %j is invalid', (variable, value) => {
    const attempt = () => loadRateLimitConfig({ [variable]: value });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(variable);
  });
});
