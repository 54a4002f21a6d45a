import { envDuration, envLogLevel, envPort, loadConfig } from '@sekisho/service-kit/config';
import {
  type RedisTopology,
  redisEnvFields,
  redisSettingsOf,
  resolveRedisTopology,
} from '@sekisho/service-kit/redis-topology';
import { defaultThreatKeyPrefix } from '@sekisho/service-kit/threat-contract';
import { z } from 'zod';

// Every setting of the detector, parsed and checked in one place at start-up.

export const configSchema = z.object({
  THREAT_HOST: z.string().min(1).default('127.0.0.1'),
  THREAT_GRPC_PORT: envPort(9003),
  THREAT_ADMIN_PORT: envPort(9103),
  /** standalone: the server's URL; sentinel: the sentinels' URLs, comma-separated. */
  THREAT_REDIS_URL: z.string().min(1).default('redis://127.0.0.1:6379'),
  /**
   * standalone or sentinel (THREAT_REDIS_SENTINEL_MASTER names the master), TLS (rediss://) and
   * ACL users: the rate-limit service's variables (service-kit/src/redis-topology.ts). Not
   * cluster: a block is written with its index and announced in one script, and ext-authz
   * reads the blocks from the same Redis.
   */
  ...redisEnvFields('THREAT', ['standalone', 'sentinel', 'cluster']),
  /** The prefix of every key and channel; ext-authz's EXT_AUTHZ_THREATS_KEY_PREFIX must match. */
  THREAT_REDIS_KEY_PREFIX: z.string().min(1).default(defaultThreatKeyPrefix),
  /** How often buffered facts go to Redis (one pipeline per flush). */
  THREAT_FLUSH_INTERVAL: envDuration('200ms').refine((ms) => ms >= 10 && ms <= 10_000, 'from 10ms to 10s'),
  /** Distinct (counter, subject) pairs held between flushes; facts of new subjects past it are dropped. */
  THREAT_MAX_PENDING_KEYS: z
    .string()
    .regex(/^[1-9]\d{0,7}$/, 'expected a whole number from 1')
    .transform(Number)
    .default(50_000),
  /** A Slack-compatible incoming webhook told of every block put in force; unset = no alerts. */
  THREAT_ALERT_WEBHOOK_URL: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
  /** Alerts per minute at most; the rest are counted (and summarised in the log). */
  THREAT_ALERT_MAX_PER_MINUTE: z
    .string()
    .regex(/^[1-9]\d{0,5}$/, 'expected a whole number from 1')
    .transform(Number)
    .default(10),
  /** Retries of an alert the webhook refused with a 429 or 5xx, or could not be reached for. */
  THREAT_ALERT_RETRIES: z.string().regex(/^\d$/, 'expected 0-9').transform(Number).default(3),
  /**
   * A MaxMind GeoLite2/GeoIP2 City database (.mmdb): where a sign-in happened when the CDN sent
   * no latitude/longitude headers (the geo anomaly rule). Unset = only the CDN's headers.
   */
  THREAT_GEOIP_DATABASE: z.string().min(1).optional(),
  LOG_LEVEL: envLogLevel(),
});
export type ThreatDetectorConfig = z.output<typeof configSchema>;

/** loadConfig, then the Redis topology checked (files read): a ConfigError names each bad variable. */
export function loadThreatDetectorConfig(env: NodeJS.ProcessEnv = process.env): ThreatDetectorConfig {
  const config = loadConfig(configSchema, env);
  threatRedisTopology(config);
  return config;
}

/** THREAT_REDIS_* → where the detector's Redis is; throws ConfigError naming the variable. */
export function threatRedisTopology(config: ThreatDetectorConfig): RedisTopology {
  return resolveRedisTopology(redisSettingsOf(config, 'THREAT', config.THREAT_REDIS_URL), 'THREAT', {
    modes: ['standalone', 'sentinel'],
    unsupported:
      'a block, its index and its announcement are written by one script, and ext-authz reads them from the same Redis: one master holds them (a Sentinel-managed one for failover)',
  });
}
