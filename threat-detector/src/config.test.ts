import { ConfigError } from '@sekisho/service-kit/config';
import { describe, expect, it } from 'vitest';
import { loadThreatDetectorConfig, threatRedisTopology } from './config';

describe('loadThreatDetectorConfig', () => {
  it('defaults to loopback, the documented ports and no webhook', () => {
    expect(loadThreatDetectorConfig({})).toEqual({
      THREAT_HOST: '127.0.0.1',
      THREAT_GRPC_PORT: 9003,
      THREAT_ADMIN_PORT: 9103,
      THREAT_REDIS_URL: 'redis://127.0.0.1:6379',
      THREAT_REDIS_KEY_PREFIX: 'sekisho:threats',
      THREAT_FLUSH_INTERVAL: 200,
      THREAT_MAX_PENDING_KEYS: 50_000,
      THREAT_ALERT_MAX_PER_MINUTE: 10,
      THREAT_ALERT_RETRIES: 3,
      THREAT_REDIS_MODE: 'standalone',
      LOG_LEVEL: 'info',
    });
  });

  it.each([
    ['THREAT_FLUSH_INTERVAL', '5ms'],
    ['THREAT_FLUSH_INTERVAL', 'soon'],
    ['THREAT_MAX_PENDING_KEYS', '0'],
    ['THREAT_GRPC_PORT', '70000'],
    ['THREAT_ALERT_WEBHOOK_URL', 'ftp://alerts.example'],
    ['THREAT_ALERT_RETRIES', '10'],
  ])('refuses %s=%s, naming the variable', (name, value) => {
    expect(() => loadThreatDetectorConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadThreatDetectorConfig({ [name]: value })).toThrow(name);
  });

  it('reaches Redis through Sentinel with TLS and ACL users for the data nodes and the sentinels', () => {
    const config = loadThreatDetectorConfig({
      THREAT_REDIS_MODE: 'sentinel',
      THREAT_REDIS_URL: 'rediss://s1:26380,rediss://s2:26380',
      THREAT_REDIS_SENTINEL_MASTER: 'sekisho',
      THREAT_REDIS_USERNAME: 'detector',
      THREAT_REDIS_PASSWORD: 'data-secret',
      THREAT_REDIS_SENTINEL_USERNAME: 'watcher',
      THREAT_REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
      THREAT_REDIS_TLS_SERVER_NAME: 'redis.internal',
    });
    expect(threatRedisTopology(config)).toEqual({
      mode: 'sentinel',
      endpoints: [
        { host: 's1', port: 26380 },
        { host: 's2', port: 26380 },
      ],
      db: 0,
      username: 'detector',
      password: 'data-secret',
      sentinel: { masterName: 'sekisho', username: 'watcher', password: 'sentinel-secret' },
      tls: { ca: undefined, cert: undefined, key: undefined, serverName: 'redis.internal' },
    });
  });

  it.each([
    [{ THREAT_REDIS_URL: 'http://a:6379' }, 'THREAT_REDIS_URL', /redis:\/\/ or rediss:\/\//],
    [{ THREAT_REDIS_URL: 'redis://a,redis://b' }, 'THREAT_REDIS_URL', /one URL expected in standalone mode/],
    [{ THREAT_REDIS_MODE: 'cluster', THREAT_REDIS_URL: 'redis://a' }, 'THREAT_REDIS_MODE', /not supported here/],
    [{ THREAT_REDIS_MODE: 'sentinel', THREAT_REDIS_URL: 'redis://s1' }, 'THREAT_REDIS_SENTINEL_MASTER', /required/],
    [{ THREAT_REDIS_TLS_CERT_FILE: '/c.pem' }, 'THREAT_REDIS_TLS_CERT_FILE', /rediss/],
  ])('refuses %j, naming %s', (env, variable, message) => {
    const attempt = () => loadThreatDetectorConfig(env);
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(new RegExp(`${variable}: `));
    expect(attempt).toThrow(message);
  });
});
