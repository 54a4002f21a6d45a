import type { Logger } from '@sekisho/service-kit/logger';
import { type RedisTopology, redisNodeOptions } from '@sekisho/service-kit/redis-topology';
import { Redis, type RedisOptions } from 'ioredis';

// The connection pair behind each piece of state ext-authz keeps in memory and Redis keeps
// for every replica (accounts, threat blocks): a command connection for the full loads, and a
// subscriber that resubscribes on every 'ready' and then asks for a full load, so a change
// missed while the subscription was down is caught. Start-up never waits for Redis.
// Through Sentinel both follow the master: a failover closes them (the sentinels' +switch-master,
// or READONLY from a demoted master), the reconnect asks the sentinels, and the subscriber's
// next 'ready' subscribes on the new master and reloads.

export interface SubscribedChannelOptions {
  redis: RedisTopology;
  channel: string;
  logger: Logger;
  /** Logged once per outage (the first error after the subscriber was last ready). */
  onErrorLog: { category: string; event_type: string; message: string };
  /** The subscription is in place: load everything now. */
  subscribed(): void;
  /** The subscriber's connection closed. */
  unsubscribed(): void;
  message(text: string): void;
}

export function connectSubscribedChannel(opts: SubscribedChannelOptions): { commands: Redis; subscriber: Redis } {
  const options: RedisOptions = {
    ...(redisNodeOptions(opts.redis) as RedisOptions),
    connectTimeout: 2_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: (attempt: number) => Math.min(100 * 2 ** attempt, 2_000),
    sentinelRetryStrategy: (attempt: number) => Math.min(100 * 2 ** attempt, 2_000),
    // A demoted master answers writes (the revocation prune) with READONLY: reconnect, via the sentinels.
    reconnectOnError: (error) => error.message.startsWith('READONLY'),
  };
  // The loads may be asked for before this connection is up: they wait for it (bounded by
  // the command timeout) rather than fail at once.
  const commands = new Redis({ ...options, enableOfflineQueue: true, commandTimeout: 5_000 });
  // Resubscribing is done here on every 'ready', followed by a full load.
  const subscriber = new Redis({ ...options, autoResubscribe: false });
  let errorLogged = false;
  for (const client of [commands, subscriber]) {
    client.on('error', (error: Error) => {
      if (errorLogged) return;
      errorLogged = true;
      const { category, event_type, message } = opts.onErrorLog;
      opts.logger.warn({ category, event_type, error_details: error.message }, message);
    });
  }
  subscriber.on('ready', () => {
    errorLogged = false;
    subscriber.subscribe(opts.channel).then(
      () => opts.subscribed(),
      () => {
        // The connection dropped again; the next 'ready' retries.
      },
    );
  });
  subscriber.on('close', () => opts.unsubscribed());
  subscriber.on('message', (channel: string, text: string) => {
    if (channel === opts.channel) opts.message(text);
  });
  return { commands, subscriber };
}
