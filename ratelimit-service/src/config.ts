import {
  envDuration,
  envEnum,
  envLogLevel,
  envOptionalHostPort,
  envPort,
  loadConfig,
} from '@sekisho/service-kit/config';
import {
  type RedisTopology,
  redisEnvFields,
  redisSettingsOf,
  resolveRedisTopology,
} from '@sekisho/service-kit/redis-topology';
import { resolveXdsChannel, type XdsChannel } from '@sekisho/service-kit/xds-channel';
import * as z from 'zod';

/** A whole number of at least `min`, in decimal digits ('1e3', ' 5' and '0x10' are refused). */
const envCount = (defaultValue: number, min: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, 'expected a whole number')
    .transform(Number)
    .refine((n) => n >= min, `expected at least ${min}`)
    .default(defaultValue);

/** Every mode: a cluster works too, with keys hash-tagged per domain or counter (RATELIMIT_REDIS_KEY_TAG). */
const redisModes = ['standalone', 'sentinel', 'cluster'] as const;

// Every setting of the service, parsed and checked in one place at start-up.
export const configSchema = z.object({
  RATELIMIT_HOST: z.string().min(1).default('127.0.0.1'),
  RATELIMIT_GRPC_PORT: envPort(9002),
  RATELIMIT_ADMIN_PORT: envPort(9102),
  /**
   * The control plane's ADS endpoint. Defaults to 127.0.0.1:18000, except when
   * RATELIMIT_CONFIG_DIR is set: files alone then configure the service, with no control plane.
   */
  RATELIMIT_XDS_ADDRESS: envOptionalHostPort(),
  /**
   * Mutual TLS to the control plane: the CA its certificate must chain to, this service's client
   * certificate and key, and the name the control plane's certificate must carry (default: the
   * address's host). Without them the address must be loopback.
   */
  RATELIMIT_XDS_CA_FILE: z.string().min(1).optional(),
  RATELIMIT_XDS_CERT_FILE: z.string().min(1).optional(),
  RATELIMIT_XDS_KEY_FILE: z.string().min(1).optional(),
  RATELIMIT_XDS_SERVER_NAME: z.string().min(1).optional(),
  /** Accept policy over plaintext from a non-loopback address (something else secures the path). */
  RATELIMIT_XDS_ALLOW_INSECURE: envEnum(['true', 'false'], 'false').transform((value) => value === 'true'),
  RATELIMIT_NODE_ID: z.string().min(1).default('ratelimit-service'),
  /** standalone: one Redis URL; sentinel: the sentinels' URLs; cluster: seed nodes' URLs (comma-separated). */
  RATELIMIT_REDIS_URL: z.string().min(1).default('redis://127.0.0.1:6379'),
  /**
   * RATELIMIT_REDIS_MODE (standalone, sentinel or cluster), SENTINEL_MASTER, the data nodes' and
   * the sentinels' ACL users and passwords (never logged), and TLS files and server name for
   * rediss://: the variables of ext-authz and the threat detector (service-kit/src/redis-topology.ts).
   */
  ...redisEnvFields('RATELIMIT', redisModes),
  /** Hash tag of the keys (see limiter/keys.ts): `domain` (one slot per domain, atomic) or `counter` (spread). */
  RATELIMIT_REDIS_KEY_TAG: envEnum(['domain', 'counter'], 'domain'),
  /**
   * When Redis fails or the breaker is open: allow (envoyproxy/ratelimit's stance), deny (429),
   * or local (this replica's in-memory limiter: every limit divided by RATELIMIT_LOCAL_REPLICAS,
   * every known block kept). The control plane's policy may set it (policyServices.rateLimit.redisFailureMode).
   */
  RATELIMIT_REDIS_FAILURE_MODE: envEnum(['allow', 'deny', 'local'], 'allow'),
  /** What to answer before the first policy arrives; defaults to deny for deny, else allow. */
  RATELIMIT_NO_POLICY_MODE: z.enum(['allow', 'deny']).optional(),
  /** local mode: the replicas expected to share the traffic; each enforces limit / this (at least 1). */
  RATELIMIT_LOCAL_REPLICAS: envCount(1, 1),
  /** Counters the local limiter keeps at most (memory bound during an outage). */
  RATELIMIT_LOCAL_MAX_KEYS: envCount(100_000, 1),
  /** Keys known to be over their limit or blocked, kept to answer without Redis; 0 = no cache. */
  RATELIMIT_LOCAL_CACHE_SIZE: envCount(100_000, 0),
  /** Consecutive Redis failures (errors, timeouts) that open the circuit breaker. */
  RATELIMIT_BREAKER_FAILURES: envCount(5, 1),
  /** How long the open breaker keeps requests from Redis before one probe; a reconnect probes at once. */
  RATELIMIT_BREAKER_OPEN_FOR: envDuration('2s'),
  /**
   * Per-command Redis timeout. Keep it under the timeout Envoy gives this service (the gateway
   * definition's policyServices.rateLimit.timeout, 100 ms by default), or Envoy gives up first
   * and its own failure mode answers instead of RATELIMIT_REDIS_FAILURE_MODE.
   */
  RATELIMIT_REDIS_TIMEOUT: envDuration('50ms'),
  /**
   * Decisions one script call carries at most: those asked for in one event-loop turn share a
   * call (a batch); 1 = a script call per decision.
   */
  RATELIMIT_REDIS_BATCH_MAX: envCount(4, 1),
  /** Optional secret: Redis keys then hold an HMAC of user ids and IPs rather than a plain hash. */
  RATELIMIT_KEY_SECRET: z.string().min(16).optional(),
  /**
   * RateLimit response fields: draft-10 (the current IETF draft: RateLimit-Policy + RateLimit), or
   * draft-06 (RateLimit-Limit/-Remaining/-Reset and a bare RateLimit-Policy) for older clients.
   */
  RATELIMIT_HEADERS: envEnum(['draft-10', 'draft-06'], 'draft-10'),
  /** A directory of envoyproxy/ratelimit YAML files, one domain per file, watched. */
  RATELIMIT_CONFIG_DIR: z.string().min(1).optional(),
  /** How often the directory is read again, besides fs.watch (which misses changes on some mounts). */
  RATELIMIT_CONFIG_POLL_INTERVAL: envDuration('5s'),
  LOG_LEVEL: envLogLevel(),
});

export type { RedisEndpoint, RedisMode, RedisTopology } from '@sekisho/service-kit/redis-topology';

export type RateLimitConfig = z.output<typeof configSchema> & { readonly redis: RedisTopology };

export const defaultXdsAddress = '127.0.0.1:18000';

export function loadRateLimitConfig(env: NodeJS.ProcessEnv = process.env): RateLimitConfig {
  const parsed = loadConfig(configSchema, env);
  const loaded = { ...parsed, redis: redisTopology(parsed) };
  const config =
    loaded.RATELIMIT_XDS_ADDRESS === undefined && loaded.RATELIMIT_CONFIG_DIR === undefined
      ? { ...loaded, RATELIMIT_XDS_ADDRESS: defaultXdsAddress }
      : loaded;
  xdsChannelOf(config);
  return config;
}

/**
 * How to reach the control plane (mutual TLS, or plaintext to loopback), undefined without one;
 * throws ConfigError naming the variable.
 */
export function xdsChannelOf(config: RateLimitConfig): XdsChannel | undefined {
  if (config.RATELIMIT_XDS_ADDRESS === undefined) return undefined;
  return resolveXdsChannel(
    {
      address: config.RATELIMIT_XDS_ADDRESS,
      caFile: config.RATELIMIT_XDS_CA_FILE,
      certFile: config.RATELIMIT_XDS_CERT_FILE,
      keyFile: config.RATELIMIT_XDS_KEY_FILE,
      serverName: config.RATELIMIT_XDS_SERVER_NAME,
      allowInsecure: config.RATELIMIT_XDS_ALLOW_INSECURE,
    },
    {
      address: 'RATELIMIT_XDS_ADDRESS',
      caFile: 'RATELIMIT_XDS_CA_FILE',
      certFile: 'RATELIMIT_XDS_CERT_FILE',
      keyFile: 'RATELIMIT_XDS_KEY_FILE',
      serverName: 'RATELIMIT_XDS_SERVER_NAME',
      allowInsecure: 'RATELIMIT_XDS_ALLOW_INSECURE',
    },
  );
}

/**
 * RATELIMIT_REDIS_* → a RedisTopology (service-kit's parser, shared with ext-authz and the
 * threat detector), every problem named by its variable. Credentials never appear in a message.
 */
export function redisTopology(config: z.output<typeof configSchema>): RedisTopology {
  return resolveRedisTopology(redisSettingsOf(config, 'RATELIMIT', config.RATELIMIT_REDIS_URL), 'RATELIMIT', {
    modes: redisModes,
  });
}
