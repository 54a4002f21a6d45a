import type { Logger } from '@sekisho/service-kit/logger';
import { Redis } from 'ioredis';
import { LogThrottle } from '../log-throttle';

/**
 * An ioredis client tuned for a limiter on the request path: commands fail at once
 * while disconnected (no offline queue) or after a short timeout, so Envoy's 20 ms
 * ratelimit deadline is met with a decision from the failure mode instead of a hang;
 * reconnection continues in the background with capped exponential back-off.
 */
export function createRedisClient(opts: { url: string; commandTimeoutMs: number; logger: Logger }): Redis {
  const throttle = new LogThrottle({ burst: 1, intervalMs: 10_000 });
  const redis = new Redis(opts.url, {
    enableOfflineQueue: false,
    commandTimeout: opts.commandTimeoutMs,
    maxRetriesPerRequest: 0,
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
  });
  let connected = false;
  redis.on('ready', () => {
    connected = true;
    opts.logger.info({ category: 'technical', event_type: 'redis_connected' }, 'redis connected');
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
      { category: 'technical', event_type: 'redis_connection_error', error_details: error.message, ...slot },
      'redis connection error; reconnecting',
    );
  });
  return redis;
}
