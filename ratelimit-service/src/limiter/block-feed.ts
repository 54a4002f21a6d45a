import type { Cluster, Redis } from 'ioredis';
import type { LocalCache } from './local-cache';
import type { RedisConnection } from './redis-client';
import { blockChannel } from './redis-limiter';
import type { Clock } from './types';

/** The index keys of active blocks (one per domain, limiter/redis-limiter.ts's announce). */
const indexPattern = 'sekisho:rl:{*}:blocks';
const page = 1000;

async function redisNow(node: Redis): Promise<number> {
  const [seconds, micros] = (await node.time()) as [string | number, string | number];
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

export interface BlockFeedHooks {
  /** A block another replica started, new to this one. */
  learned?(): void;
  /** Blocks read from the indexes at start or after the subscriber reconnected. */
  loaded?(count: number): void;
  /** An announcement or index load that failed (a malformed message, Redis down during a load). */
  error?(error: unknown): void;
}

/** "key d1 d2 d3 d4 d5 d6": the block key (its domain may hold spaces) and the rule's definition (6 fields). */
function splitMember(text: string): { key: string; definition: string } | undefined {
  const fields = text.split(' ');
  if (fields.length < 7) return undefined;
  return { key: fields.slice(0, -6).join(' '), definition: fields.slice(-6).join(' ') };
}

/**
 * Every replica's blocks in this one's cache: a subscriber connection of its own listens to
 * the blocks the rate-limit script announces as they start (classic PUBLISH, which a cluster
 * broadcasts to every node), and on every (re)subscription the indexes of active blocks are
 * read (SCAN per master, then each index by pages, at most `maxLoad` blocks) for the blocks
 * started while this replica was not listening. With Redis down, the local mode then
 * refuses a client blocked through any replica, for the block's remaining time.
 */
export class BlockFeed {
  private subscriber: RedisConnection | undefined;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: {
      redis: RedisConnection;
      cache: LocalCache;
      /** Blocks read from the indexes at most per load. */
      maxLoad: number;
      /** Overrides Redis's clock (tests that move time, as the limiter's own clock does); omit it in production. */
      clock?: Clock;
      hooks?: BlockFeedHooks;
    },
  ) {}

  /** Subscribes (and loads the indexes once subscribed, and again after each reconnect). */
  start(): void {
    const { redis } = this.opts;
    // Subscribe may be sent before the connection is ready: this connection queues it.
    const subscriber =
      'isCluster' in redis && redis.isCluster
        ? (redis as Cluster).duplicate(undefined, { enableOfflineQueue: true })
        : (redis as Redis).duplicate({ enableOfflineQueue: true, commandTimeout: undefined });
    this.subscriber = subscriber;
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === blockChannel) this.onAnnouncement(message);
    });
    // ioredis resubscribes on every reconnect (a Sentinel failover included); 'ready' follows.
    subscriber.on('ready', () => this.loadSoon(0));
    subscriber.on('error', () => {});
    subscriber.subscribe(blockChannel).catch((error: unknown) => this.opts.hooks?.error?.(error));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.subscriber?.disconnect();
  }

  private onAnnouncement(message: string) {
    // "now expiry key definition", Redis ms: the remaining time is exact whatever the clocks say.
    const space1 = message.indexOf(' ');
    const space2 = message.indexOf(' ', space1 + 1);
    const now = Number(message.slice(0, space1));
    const expiry = Number(message.slice(space1 + 1, space2));
    const member = splitMember(message.slice(space2 + 1));
    if (!member || !Number.isFinite(now) || !Number.isFinite(expiry)) {
      this.opts.hooks?.error?.(new Error(`malformed block announcement: ${message.slice(0, 200)}`));
      return;
    }
    if (this.record(member.key, member.definition, expiry - now)) this.opts.hooks?.learned?.();
  }

  /** Remembers a block; true when this replica did not know it already (its own blocks are announced to it too). */
  private record(key: string, definition: string, ms: number): boolean {
    const { cache } = this.opts;
    // Known for about as long (the announcer's own, less a round trip): nothing new.
    const known = cache.refusedFor(key, 1, definition) >= ms - 2_000;
    cache.remember(key, ms, 1, definition);
    return !known && ms > 0;
  }

  private loadSoon(delayMs: number) {
    if (this.closed) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      // The command connection is not back yet (it reconnects on its own): wait for it quietly.
      if (this.opts.redis.status !== 'ready') {
        this.loadSoon(250);
        return;
      }
      this.load().then(
        (count) => this.opts.hooks?.loaded?.(count),
        (error: unknown) => {
          // The command connection may come back after the subscriber: try again shortly.
          this.opts.hooks?.error?.(error);
          this.loadSoon(1_000);
        },
      );
    }, delayMs);
    this.retry.unref();
  }

  /** Reads the active blocks of every index (SCAN per master, pages of ZRANGE BYSCORE); returns how many. */
  async load(): Promise<number> {
    const { redis, maxLoad } = this.opts;
    // A cluster not yet connected lists no masters: that is no answer, try again.
    if (redis.status !== 'ready') throw new Error(`the Redis client is ${redis.status}, not ready`);
    const nodes: Redis[] =
      'isCluster' in redis && redis.isCluster ? (redis as Cluster).nodes('master') : [redis as Redis];
    let count = 0;
    for (const node of nodes) {
      const now = this.opts.clock ? this.opts.clock() : await redisNow(node);
      let cursor = '0';
      do {
        const [next, indexes] = await node.scan(cursor, 'MATCH', indexPattern, 'COUNT', page);
        cursor = next;
        for (const index of indexes) {
          for (let offset = 0; count < maxLoad; offset += page) {
            const entries = await node.zrangebyscore(index, now + 1, '+inf', 'WITHSCORES', 'LIMIT', offset, page);
            for (let i = 0; i + 1 < entries.length && count < maxLoad; i += 2) {
              const member = splitMember(entries[i] as string);
              if (!member) continue;
              this.record(member.key, member.definition, Number(entries[i + 1]) - now);
              count++;
            }
            if (entries.length < 2 * page) break;
          }
          if (count >= maxLoad) return count;
        }
      } while (cursor !== '0');
    }
    return count;
  }
}
