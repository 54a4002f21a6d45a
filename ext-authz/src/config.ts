import {
  ConfigError,
  envDuration,
  envEnum,
  envHostPort,
  envLogLevel,
  envOptionalHostPort,
  envPort,
  loadConfig,
} from '@sekisho/service-kit/config';
import {
  type RedisSettings,
  type RedisTopology,
  redisEnvFields,
  redisSettingsOf,
  resolveRedisTopology,
} from '@sekisho/service-kit/redis-topology';
import { defaultThreatKeyPrefix } from '@sekisho/service-kit/threat-contract';
import { resolveXdsChannel, type XdsChannel } from '@sekisho/service-kit/xds-channel';
import * as z from 'zod';
import { defaultKeyPrefix } from './accounts/redis-store';
import { GOOGLE_SECURETOKEN_X509_URL } from './firebase/key-store';

// Every setting of the service, parsed and checked in one place at start-up.

const redisModes = ['standalone', 'sentinel'] as const;
const clusterRefusal =
  'the account state and the blocks are a few keys changed together by scripts and announced by pub/sub; one master holds them (a Sentinel-managed one for failover)';

/** A whole number of at least 1. */
const count = (defaultValue: number) =>
  z
    .string()
    .regex(/^[1-9]\d{0,8}$/, 'expected a whole number from 1')
    .transform(Number)
    .default(defaultValue);
/** Firebase ID tokens always expire an hour after they are issued. */
const ID_TOKEN_LIFETIME_MS = 3_600_000;

export const configSchema = z
  .object({
    EXT_AUTHZ_HOST: z.string().min(1).default('127.0.0.1'),
    EXT_AUTHZ_GRPC_PORT: envPort(9001),
    EXT_AUTHZ_ADMIN_PORT: envPort(9101),
    /** The control plane's ADS address, where the AuthzPolicy comes from. */
    EXT_AUTHZ_XDS_ADDRESS: envHostPort('127.0.0.1:18000'),
    /**
     * Mutual TLS to the control plane: the CA its certificate must chain to, this service's
     * client certificate and key, and the name the control plane's certificate must carry
     * (default: the address's host). Without them the address must be loopback.
     */
    EXT_AUTHZ_XDS_CA_FILE: z.string().min(1).optional(),
    EXT_AUTHZ_XDS_CERT_FILE: z.string().min(1).optional(),
    EXT_AUTHZ_XDS_KEY_FILE: z.string().min(1).optional(),
    EXT_AUTHZ_XDS_SERVER_NAME: z.string().min(1).optional(),
    /** Accept policy over plaintext from a non-loopback address (something else secures the path). */
    EXT_AUTHZ_XDS_ALLOW_INSECURE: envEnum(['true', 'false'], 'false').transform((value) => value === 'true'),
    EXT_AUTHZ_NODE_ID: z.string().min(1).default('ext-authz'),
    /** Google's x509 endpoint of the securetoken keys, or a local one in the same format. */
    EXT_AUTHZ_FIREBASE_CERTS_URL: z.url({ protocol: /^https?$/ }).default(GOOGLE_SECURETOKEN_X509_URL),
    /**
     * Development only: lets the keys URL be plain http (devstack's local key server). Whoever
     * can change the keys in transit can sign any token, so https is the rule otherwise.
     */
    EXT_AUTHZ_KEYS_ALLOW_HTTP: envEnum(['true', 'false'], 'false').transform((value) => value === 'true'),
    /**
     * Development only: the Firebase Auth emulator's host:port (as firebase-admin's
     * FIREBASE_AUTH_EMULATOR_HOST). Set, ext-authz also accepts the emulator's unsigned ID
     * tokens (alg "none") for a demo- project; every claim is still checked. Refused when
     * NODE_ENV=production: an unsigned token is one anybody can write.
     */
    EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: envOptionalHostPort(),
    /** Read only to refuse the emulator mode in production. */
    NODE_ENV: z.string().optional(),
    /** Allowed clock skew for exp, iat and auth_time. */
    EXT_AUTHZ_CLOCK_TOLERANCE: envDuration('5s').refine((ms) => ms <= 300_000, 'at most 5m'),
    /** Timeout of one fetch of the keys. */
    EXT_AUTHZ_KEYS_FETCH_TIMEOUT: envDuration('5s').refine((ms) => ms >= 100, 'at least 100ms'),
    /** A token with an unknown kid refetches the keys at most once per this interval. */
    EXT_AUTHZ_KEYS_UNKNOWN_KID_INTERVAL: envDuration('30s').refine((ms) => ms >= 1_000, 'at least 1s'),
    /** How long past their Cache-Control expiry the keys stay in use while every refresh fails. */
    EXT_AUTHZ_KEYS_MAX_STALE: envDuration('24h'),
    /** Tokens whose signature stays verified in memory (0 turns the cache off). */
    EXT_AUTHZ_TOKEN_CACHE_SIZE: z
      .string()
      .regex(/^\d{1,7}$/, 'expected a number of tokens (0-9999999)')
      .transform(Number)
      .default(10_000),
    /** Denial log records per cause (event and reason) and client IP per window; the rest are counted. */
    EXT_AUTHZ_DENIAL_LOG_PER_CLIENT: count(20),
    /** Denial log records per cause per window, every client together (a flood from many addresses). */
    EXT_AUTHZ_DENIAL_LOG_PER_CAUSE: count(1_000),
    EXT_AUTHZ_DENIAL_LOG_WINDOW: envDuration('1m').refine((ms) => ms >= 1_000, 'at least 1s'),
    /**
     * Where the account state (disabled, revoked, overrides) lives; unset turns the feature
     * off. Read into memory at start and kept current by pub/sub: a Check never waits for it.
     */
    EXT_AUTHZ_REDIS_URL: z.string().min(1).optional(),
    /**
     * standalone (EXT_AUTHZ_REDIS_URL is the server) or sentinel (the sentinels' URLs, comma-
     * separated; EXT_AUTHZ_REDIS_SENTINEL_MASTER names the master), with TLS (rediss://) and ACL
     * users: service-kit/src/redis-topology.ts, the same variables as the rate-limit service's.
     * Not cluster: the state is a few keys changed by multi-key scripts that one master holds.
     */
    ...redisEnvFields('EXT_AUTHZ', ['standalone', 'sentinel', 'cluster']),
    /** Every replica reloads the whole state this often, on top of the change channel. */
    EXT_AUTHZ_ACCOUNTS_RESYNC: envDuration('30s').refine((ms) => ms >= 100, 'at least 100ms'),
    /**
     * A revocation Firebase also made is removed this long after Firebase made it: at least a
     * Firebase ID token's lifetime (1h) plus EXT_AUTHZ_CLOCK_TOLERANCE, when it can no longer
     * refuse a token that is not expired anyway. The default leaves room for clocks that differ.
     */
    EXT_AUTHZ_REVOCATION_RETENTION: envDuration('2h'),
    /** How often each replica looks for such revocations (one Lua script; replicas may overlap). */
    EXT_AUTHZ_REVOCATION_PRUNE_INTERVAL: envDuration('5m').refine((ms) => ms >= 1_000, 'at least 1s'),
    /** The Redis keys' prefix (one per gateway when several share a Redis). */
    EXT_AUTHZ_ACCOUNTS_KEY_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9:_.-]{1,100}$/, 'expected 1-100 of A-Z a-z 0-9 : _ . -')
      .default(defaultKeyPrefix),
    /**
     * The threat detector's blocks (IP_BLOCKED, USER_BLOCKED, the aggressive limit), read from
     * the same Redis as the account state and kept in memory like it; off without
     * EXT_AUTHZ_REDIS_URL or with false.
     */
    EXT_AUTHZ_THREATS: envEnum(['true', 'false'], 'true').transform((value) => value === 'true'),
    /** Must equal the detector's THREAT_REDIS_KEY_PREFIX. */
    EXT_AUTHZ_THREATS_KEY_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9:_.-]{1,100}$/, 'expected 1-100 of A-Z a-z 0-9 : _ . -')
      .default(defaultThreatKeyPrefix),
    /** Every replica reloads every block this often, on top of the change channel. */
    EXT_AUTHZ_THREATS_RESYNC: envDuration('10s').refine((ms) => ms >= 100, 'at least 100ms'),
    /**
     * The per-user limits counted in the Check (the definition's perUserLimits: ext-authz), in
     * the same Redis as the account state: each Redis call's timeout, past which the failure
     * mode answers (as the rate-limit service's RATELIMIT_REDIS_TIMEOUT).
     */
    EXT_AUTHZ_LIMITS_REDIS_TIMEOUT: envDuration('50ms'),
    /** While that Redis cannot answer, unless the definition sets redisFailureMode: allow, deny or local. */
    EXT_AUTHZ_LIMITS_REDIS_FAILURE_MODE: envEnum(['allow', 'deny', 'local'], 'allow'),
    /** Hashes user ids in the counters' keys and the logs: the rate-limit service's RATELIMIT_KEY_SECRET. */
    EXT_AUTHZ_LIMITS_KEY_SECRET: z.string().min(16).optional(),
    /** The RateLimit fields: draft-10 or draft-06, as the rate-limit service's RATELIMIT_HEADERS. */
    EXT_AUTHZ_LIMITS_HEADERS: envEnum(['draft-10', 'draft-06'], 'draft-10'),
    /**
     * Leased quota: the share of a fixed-window limit a replica counts in Redis at once and then
     * answers from memory (limiter/leased-limiter.ts in the rate-limit service); 0% = a Redis call
     * per request. Never more than the limit; a client may be refused up to replicas × processes
     * × lease requests early.
     */
    EXT_AUTHZ_LIMITS_LEASE: z
      .string()
      .regex(/^(0|[1-9]\d?)(\.\d{1,2})?%$/, 'expected a percentage from 0% to 50% (1%, 0.5%)')
      .transform((text) => Number(text.slice(0, -1)) / 100)
      .refine((share) => share <= 0.5, 'at most 50%')
      .default(0.01),
    /** The largest lease, in requests. */
    EXT_AUTHZ_LIMITS_LEASE_MAX: count(100),
    LOG_LEVEL: envLogLevel(),
  })
  .superRefine((config, ctx) => {
    if (new URL(config.EXT_AUTHZ_FIREBASE_CERTS_URL).protocol === 'http:' && !config.EXT_AUTHZ_KEYS_ALLOW_HTTP) {
      ctx.addIssue({
        code: 'custom',
        path: ['EXT_AUTHZ_FIREBASE_CERTS_URL'],
        message: 'must be https (http only for development, with EXT_AUTHZ_KEYS_ALLOW_HTTP=true)',
      });
    }
    if (config.EXT_AUTHZ_REVOCATION_RETENTION < ID_TOKEN_LIFETIME_MS + config.EXT_AUTHZ_CLOCK_TOLERANCE) {
      ctx.addIssue({
        code: 'custom',
        path: ['EXT_AUTHZ_REVOCATION_RETENTION'],
        message:
          'must be at least 1h (the lifetime of a Firebase ID token) plus EXT_AUTHZ_CLOCK_TOLERANCE: a revocation pruned sooner could let a revoked token back in',
      });
    }
    if (config.EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST !== undefined && config.NODE_ENV === 'production') {
      ctx.addIssue({
        code: 'custom',
        path: ['EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST'],
        message:
          "accepts the Auth emulator's unsigned tokens, which anybody can forge: refused with NODE_ENV=production (unset it)",
      });
    }
  });

/** `redis`: how to reach the account state and the blocks; undefined without EXT_AUTHZ_REDIS_URL. */
export type ExtAuthzConfig = z.output<typeof configSchema> & { readonly redis: RedisTopology | undefined };

/**
 * loadConfig, then the Redis topology and the control channel checked (files read): a
 * ConfigError names each bad variable.
 */
export function loadExtAuthzConfig(env: NodeJS.ProcessEnv = process.env): ExtAuthzConfig {
  const parsed = loadConfig(configSchema, env);
  const config = { ...parsed, redis: extAuthzRedisTopology(parsed) };
  xdsChannelOf(config);
  return config;
}

function extAuthzRedisTopology(config: z.output<typeof configSchema>): RedisTopology | undefined {
  const settings = redisSettingsOf(config, 'EXT_AUTHZ', config.EXT_AUTHZ_REDIS_URL ?? '');
  if (config.EXT_AUTHZ_REDIS_URL === undefined) {
    // The other settings without a URL would be silently ignored: say so instead.
    const { url: _url, mode: _mode, ...rest } = settings;
    const given = Object.entries(rest).filter(([, value]) => value !== undefined);
    if (given.length > 0 || config.EXT_AUTHZ_REDIS_MODE !== 'standalone')
      throw new ConfigError([
        {
          variable: 'EXT_AUTHZ_REDIS_URL',
          message: 'required when other EXT_AUTHZ_REDIS_* settings are given (unset, the account state is off)',
        },
      ]);
    return undefined;
  }
  return resolveExtAuthzRedis(settings);
}

/** The EXT_AUTHZ_REDIS_* settings → a topology, as the service reads them (also the admin command's). */
export function resolveExtAuthzRedis(settings: RedisSettings): RedisTopology {
  return resolveRedisTopology(settings, 'EXT_AUTHZ', { modes: redisModes, unsupported: clusterRefusal });
}

/** How to reach the control plane (mutual TLS, or plaintext to loopback); throws ConfigError. */
export function xdsChannelOf(config: ExtAuthzConfig): XdsChannel {
  return resolveXdsChannel(
    {
      address: config.EXT_AUTHZ_XDS_ADDRESS,
      caFile: config.EXT_AUTHZ_XDS_CA_FILE,
      certFile: config.EXT_AUTHZ_XDS_CERT_FILE,
      keyFile: config.EXT_AUTHZ_XDS_KEY_FILE,
      serverName: config.EXT_AUTHZ_XDS_SERVER_NAME,
      allowInsecure: config.EXT_AUTHZ_XDS_ALLOW_INSECURE,
    },
    {
      address: 'EXT_AUTHZ_XDS_ADDRESS',
      caFile: 'EXT_AUTHZ_XDS_CA_FILE',
      certFile: 'EXT_AUTHZ_XDS_CERT_FILE',
      keyFile: 'EXT_AUTHZ_XDS_KEY_FILE',
      serverName: 'EXT_AUTHZ_XDS_SERVER_NAME',
      allowInsecure: 'EXT_AUTHZ_XDS_ALLOW_INSECURE',
    },
  );
}
