import type { Logger } from '@sekisho/service-kit/logger';
import type { RedisTopology } from '@sekisho/service-kit/redis-topology';
import type { Registry } from 'prom-client';
import { LogThrottle } from '../log-throttle';
import { createRateLimitMetrics, type RateLimitMetrics } from '../metrics';
import { BlockFeed } from './block-feed';
import { CircuitBreaker } from './breaker';
import type { KeyTag } from './keys';
import { LocalCache } from './local-cache';
import { LocalLimiter } from './local-limiter';
import { createRedisClient, type RedisConnection } from './redis-client';
import { RedisLimiter } from './redis-limiter';
import { ResilientLimiter, type StoreFailureMode } from './resilient-limiter';
import type { Clock } from './types';

// The limiter as the rate-limit service runs it, built in one place so that ext-authz,
// when the definition counts the per-user limits in its Check (perUserLimits: ext-authz),
// counts them with exactly the same keys, scripts, breaker, local cache and block feed.

export interface LimiterStackOptions {
  topology: RedisTopology;
  commandTimeoutMs: number;
  /** Hashes counted values (user id, IP) into keys and logs; the same secret on every replica. */
  hashValues: (values: readonly string[]) => string;
  keyTag: KeyTag;
  /** Requests per EVALSHA batch. */
  maxBatch: number;
  breakerFailures: number;
  breakerOpenMs: number;
  /** Known refusals kept in memory; 0 = no cache and no block feed. */
  cacheSize: number;
  /** The local limiter's keys (local failure mode). */
  localMaxKeys: number;
  /** What to answer while Redis cannot (the policy's choice, else the replica's). */
  failureMode: () => StoreFailureMode;
  /** What each limit is divided by in the local mode (replicas × processes). */
  localDivisor: () => number;
  clock?: Clock;
  logger: Logger;
  registry: Registry;
}

export interface LimiterStack {
  redis: RedisConnection;
  breaker: CircuitBreaker;
  cache: LocalCache;
  local: LocalLimiter;
  limiter: ResilientLimiter;
  metrics: RateLimitMetrics;
  redisReady(): boolean;
  /** Redis answered at least once since the start. */
  connectedOnce(): boolean;
  /** The block feed, then Redis (waiting for pending replies only while Redis answers). */
  close(): Promise<void>;
}

export function createLimiterStack(opts: LimiterStackOptions): LimiterStack {
  const { logger, hashValues, keyTag } = opts;
  const redis = createRedisClient({ topology: opts.topology, commandTimeoutMs: opts.commandTimeoutMs, logger });
  const redisReady = () => redis.status === 'ready';
  let connectedOnce = false;
  redis.once('ready', () => {
    connectedOnce = true;
  });

  const breaker = new CircuitBreaker({
    failureThreshold: opts.breakerFailures,
    openMs: opts.breakerOpenMs,
    onChange: (to, from) => {
      const fields = { category: 'technical', event_type: 'redis_breaker_state', state: to, previous: from };
      if (to === 'open') logger.warn({ ...fields, failure_mode: opts.failureMode() }, 'redis circuit breaker open');
      else logger.info(fields, `redis circuit breaker ${to === 'closed' ? 'closed' : 'half-open'}`);
      // Redis counts again: the outage's local counts are dropped (its blocks stay in the cache).
      if (to === 'closed') local.reset();
    },
  });
  // A fresh connection means Redis is back: probe with the next request instead of waiting.
  redis.on('ready', () => breaker.probeSoon());
  // A test's clock moves the cache and the local limiter with Redis's windows.
  const cache = new LocalCache({
    maxEntries: opts.cacheSize,
    clock: opts.clock,
    onEvict: () => metrics.localCacheEvictions.inc(),
  });
  const local = new LocalLimiter({
    hashValues,
    cache,
    keyTag,
    replicas: opts.localDivisor,
    maxKeys: opts.localMaxKeys,
    clock: opts.clock,
  });
  const limiter = new ResilientLimiter({
    store: new RedisLimiter({
      redis,
      hashValues,
      keyTag,
      clock: opts.clock,
      maxBatch: opts.maxBatch,
      hooks: {
        scriptCall: (ok, seconds, requests) => {
          (ok ? metrics.redisDurationOk : metrics.redisDurationError).observe(seconds);
          metrics.redisBatchSize.observe(requests);
          if (!ok) metrics.redisErrors.inc();
        },
      },
    }),
    breaker,
    cache,
    local,
    hashValues,
    mode: opts.failureMode,
    keyTag,
  });
  // Every replica's blocks, as they start and (on every subscription) those already active:
  // the local mode then refuses a client blocked through any replica.
  const blockFeedLogs = new LogThrottle({ burst: 1, intervalMs: 10_000 });
  const blockFeed = new BlockFeed({
    redis,
    cache,
    maxLoad: opts.cacheSize,
    clock: opts.clock,
    hooks: {
      learned: () => metrics.blocksLearned.inc(),
      loaded: (count) => metrics.blocksLoaded.inc(count),
      error: (error) => {
        const slot = blockFeedLogs.take('block-feed');
        if (slot)
          logger.warn(
            {
              category: 'technical',
              event_type: 'ratelimit_block_feed_error',
              error_details: error instanceof Error ? error.message : String(error),
              ...slot,
            },
            'block announcements: load or message failed',
          );
      },
    },
  });
  if (opts.cacheSize > 0) blockFeed.start();
  const metrics = createRateLimitMetrics(opts.registry, {
    redisReady,
    breakerState: () => breaker.state,
    modeInForce: () => limiter.modeInForce(),
    knownBlocks: () => cache.blocks,
  });

  return {
    redis,
    breaker,
    cache,
    local,
    limiter,
    metrics,
    redisReady,
    connectedOnce: () => connectedOnce,
    close: async () => {
      blockFeed.close();
      // quit() waits for pending replies; when Redis is unreachable, or frozen (QUIT times out),
      // there is nothing worth waiting for.
      if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
      else redis.disconnect();
    },
  };
}
