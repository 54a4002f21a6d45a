import { ConfigError } from '@sekisho/service-kit/config';
import { describe, expect, it } from 'vitest';
import { loadThreatDetectorConfig } from './config';

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
});
