import type { Logger } from '@sekisho/service-kit/logger';
import { redisNodeOptions } from '@sekisho/service-kit/redis-topology';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { RedisTopology } from '../config';
import { LogThrottle } from '../log-throttle';

/** A standalone or Sentinel-managed connection, or a cluster: what the limiter sends its script through. */
export type RedisConnection = Redis | Cluster;

/**
 * An ioredis client for the topology, tuned for a limiter on the request path: commands fail
 * at once while disconnected (no offline queue) or after a short timeout, so Envoy's
 * ratelimit deadline is met with a decision from the failure mode instead of a hang;
 * reconnection continues in the background with capped exponential back-off.
 *
 * - standalone: one server (`redis://` or `rediss://`).
 * - sentinel: the master the sentinels name; a READONLY reply (the server this replica talks
 *   to was demoted by a failover) drops the connection, and the reconnect asks the
 *   sentinels for the new master; sentinels' failover announcements do the same at once.
 * - cluster: ioredis follows MOVED and ASK and refreshes the slot map; CLUSTERDOWN is
 *   answered at once (not retried), so the caller's failure mode decides within the deadline.
 */
export function createRedisClient(opts: {
  topology: RedisTopology;
  commandTimeoutMs: number;
  logger: Logger;
}): RedisConnection {
  const { topology } = opts;
  const throttle = new LogThrottle({ burst: 1, intervalMs: 10_000 });
  // Where and how to connect (hosts or sentinels, credentials, TLS): service-kit's, shared
  // with ext-authz and the threat detector; the timeouts and queueing below are the limiter's.
  const where = redisNodeOptions(topology) as RedisOptions;
  const node: RedisOptions = {
    enableOfflineQueue: false,
    commandTimeout: opts.commandTimeoutMs,
    maxRetriesPerRequest: 0,
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
    // 1 = reconnect without resending: the command that met READONLY is answered by the
    // failure mode now (resending could miss the deadline); the next ones reach the master.
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 1 : false),
  };

  let redis: RedisConnection;
  if (topology.mode === 'cluster') {
    const clusterOptions: ClusterOptions = {
      redisOptions: { ...node, ...where },
      enableOfflineQueue: false,
      clusterRetryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
      // CLUSTERDOWN: no waiting and retrying inside a request; the slot map is refreshed by
      // the next MOVED or connection error, and by the periodic refresh.
      retryDelayOnClusterDown: 0,
      retryDelayOnTryAgain: 10,
      retryDelayOnFailover: 10,
      slotsRefreshTimeout: 1_000,
      slotsRefreshInterval: 5_000,
    };
    redis = new Cluster(
      topology.endpoints.map((e) => ({ host: e.host, port: e.port })),
      clusterOptions,
    );
  } else if (topology.mode === 'sentinel') {
    redis = new Redis({
      ...node,
      ...where,
      sentinelCommandTimeout: 1_000,
      sentinelRetryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 2_000),
    });
  } else {
    redis = new Redis({ ...node, ...where });
  }

  let connected = false;
  redis.on('ready', () => {
    connected = true;
    opts.logger.info(
      { category: 'technical', event_type: 'redis_connected', redis_mode: topology.mode },
      'redis connected',
    );
  });
  redis.on('close', () => {
    // Once per lost connection; the reconnect attempts that follow log through 'error'.
    if (!connected) return;
    connected = false;
    opts.logger.warn({ category: 'technical', event_type: 'redis_disconnected' }, 'redis connection lost');
  });
  redis.on('error', (error: Error) => {
    const slot = throttle.take('connection');
    if (!slot) return;
    opts.logger.warn(
      {
        category: 'technical',
        event_type: 'redis_connection_error',
        error_code: classifyRedisError(error).code,
        error_details: error.message,
        ...slot,
      },
      'redis connection error; reconnecting',
    );
  });
  // A cluster also reports errors per node; they surface through the cluster's 'error' or
  // as command failures, so they need no handler of their own here.
  return redis;
}

/**
 * What went wrong with Redis, for the limiter's caller to act on (the failure mode, a
 * circuit breaker): the store was not reached or not in time, or it answered with a
 * condition that passes (LOADING, READONLY after a failover, CLUSTERDOWN), or the
 * credentials or the script are wrong (configuration or a bug).
 */
export type RedisFaultCode =
  | 'REDIS_UNAVAILABLE'
  | 'REDIS_TIMEOUT'
  | 'REDIS_LOADING'
  | 'REDIS_READONLY'
  | 'REDIS_CLUSTER_DOWN'
  | 'REDIS_AUTH'
  | 'REDIS_SCRIPT';

export class RedisFault extends Error {
  override name = 'RedisFault';
  constructor(
    readonly code: RedisFaultCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${code}: ${message}`, options);
  }
}

// ioredis' own messages (it has no codes for them), then Redis's error prefixes.
const byMessage: ReadonlyArray<[RegExp, RedisFaultCode]> = [
  [/^Command timed out/, 'REDIS_TIMEOUT'],
  [/^LOADING\b/, 'REDIS_LOADING'],
  [/^READONLY\b/, 'REDIS_READONLY'],
  [/^(CLUSTERDOWN|TRYAGAIN)\b/, 'REDIS_CLUSTER_DOWN'],
  [/^(NOAUTH|WRONGPASS|NOPERM)\b/, 'REDIS_AUTH'],
  // A script that fails (a bug), or keys of several slots in one call (a key-layout bug).
  [/^(NOSCRIPT|CROSSSLOT)\b|^ERR .*script/i, 'REDIS_SCRIPT'],
];

/**
 * Any error from a Redis command → a RedisFault. Unknown errors (refused or closed
 * connections, a cluster not ready, sentinels unreachable, MASTERDOWN) are
 * REDIS_UNAVAILABLE: the store could not be used, whatever the reason.
 */
export function classifyRedisError(error: unknown): RedisFault {
  if (error instanceof RedisFault) return error;
  const message = error instanceof Error ? error.message : String(error);
  // A cluster's redirection limit wraps the last node error: classify by that, and a
  // cluster still in flux after every retry (ASK, MOVED: a slot migrating, a failover) as down.
  const redirections = /^Too many Cluster redirections\. Last error: ((Reply)?Error: )?/;
  const inner = message.replace(redirections, '');
  for (const [pattern, code] of byMessage)
    if (pattern.test(inner)) return new RedisFault(code, message, { cause: error });
  if (redirections.test(message)) return new RedisFault('REDIS_CLUSTER_DOWN', message, { cause: error });
  return new RedisFault('REDIS_UNAVAILABLE', message, { cause: error });
}
