// The threat detector's blocks in Redis (layout: service-kit/src/threat-contract.ts) and this
// replica's copy of them in memory, kept the way the account state is (accounts/redis-store.ts):
// subscribe to the change channel, then load everything; reload every `resyncMs` and after
// every resubscription; while Redis is away the last copy stays in force. Blocks carry their
// expiry, so changes are idempotent and need no version: a message that arrives during a load
// is applied again on top of it.
import type { Logger } from '@sekisho/service-kit/logger';
import type { RedisTopology } from '@sekisho/service-kit/redis-topology';
import {
  blockMember,
  deviceHash,
  liftBlockScript,
  type ThreatBlock,
  type ThreatChange,
  threatBlockSchema,
  threatChangeSchema,
  threatKeys,
  trustDeviceScript,
} from '@sekisho/service-kit/threat-contract';
import type { Redis } from 'ioredis';
import { connectSubscribedChannel } from '../redis-channel';
import { ThreatTable, type ThreatView } from './state';

/** Reads every block not yet expired at nowMs; records that do not parse are skipped and counted. */
export async function readBlocks(
  redis: Redis,
  prefix: string,
  nowMs: number,
): Promise<{ blocks: ThreatBlock[]; skipped: number }> {
  const keys = threatKeys(prefix);
  const members = await redis.zrangebyscore(keys.index, `(${nowMs}`, '+inf');
  if (members.length === 0) return { blocks: [], skipped: 0 };
  const texts = await redis.hmget(keys.records, ...members);
  const blocks: ThreatBlock[] = [];
  let skipped = 0;
  for (const text of texts) {
    const parsed = text === null ? undefined : safeJson(text, threatBlockSchema);
    if (parsed) blocks.push(parsed);
    else skipped++;
  }
  return { blocks, skipped };
}

/** Lifts a block (the admin command's side); every replica drops it within a second. */
export async function removeBlock(redis: Redis, prefix: string, member: string): Promise<boolean> {
  const keys = threatKeys(prefix);
  const change: ThreatChange = { op: 'unblock', member };
  const removed = await redis.eval(
    liftBlockScript,
    3,
    keys.index,
    keys.records,
    keys.channel,
    member,
    JSON.stringify(change),
  );
  return Number(removed) === 1;
}

/**
 * Adds (or removes) a device an operator vouches for to the user's trusted set, kept as its
 * SHA-256 only; a geo anomaly state already in force gets the new set at once (every replica
 * within a second). One script (threat-contract.ts), so concurrent changes cannot leave the set
 * and the state disagreeing. A state the detector writes later copies the set itself.
 */
export async function setTrustedDevice(
  redis: Redis,
  prefix: string,
  uid: string,
  deviceId: string,
  trusted: boolean,
): Promise<{ stateUpdated: boolean }> {
  const keys = threatKeys(prefix);
  const updated = await redis.eval(
    trustDeviceScript,
    4,
    keys.index,
    keys.records,
    keys.channel,
    keys.devices(uid),
    `auth:${uid}`,
    deviceHash(deviceId),
    trusted ? '1' : '0',
  );
  return { stateUpdated: Number(updated) === 1 };
}

/** Drops expired entries (any replica may; the readers ignore them anyway). */
export async function pruneExpiredBlocks(redis: Redis, prefix: string, nowMs: number): Promise<number> {
  const keys = threatKeys(prefix);
  const expired = await redis.zrangebyscore(keys.index, '-inf', nowMs, 'LIMIT', 0, 1000);
  if (expired.length === 0) return 0;
  await redis
    .multi()
    .zrem(keys.index, ...expired)
    .hdel(keys.records, ...expired)
    .exec();
  return expired.length;
}

/** Blocks held, by kind (ip, user, limit, auth). */
export type BlocksByKind = Record<ThreatBlock['kind'], number>;

export interface ThreatStoreEvents {
  synced(event: { ok: boolean; byKind: BlocksByKind }): void;
  subscription(subscribed: boolean): void;
  /** A block applied from the channel (op block or unblock). */
  changeApplied(op: ThreatChange['op'], byKind: BlocksByKind): void;
}

export interface ThreatStoreOptions {
  /** Where the state lives: standalone or Sentinel (service-kit/redis-topology). */
  redis: RedisTopology;
  keyPrefix: string;
  resyncMs: number;
  now?: () => number;
  logger: Logger;
  events?: ThreatStoreEvents;
}

export class RedisThreatStore implements ThreatView {
  readonly table = new ThreatTable();
  private commands: Redis | undefined;
  private subscriber: Redis | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pending: ThreatChange[] | undefined;
  private syncing: Promise<void> | undefined;
  private subscribedNow = false;
  private closed = false;
  private lastSync: { at: string; ok: boolean; error?: string } | undefined;
  /** False until the first load: until then nobody is refused (detection down denies no one). */
  loaded = false;

  constructor(private readonly opts: ThreatStoreOptions) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  ipRefusal(ip: string | undefined, nowMs: number) {
    return this.table.ipRefusal(ip, nowMs);
  }

  userRefusal(uid: string, nowMs: number) {
    return this.table.userRefusal(uid, nowMs);
  }

  authState(uid: string, nowMs: number) {
    return this.table.authState(uid, nowMs);
  }

  get subscribed(): boolean {
    return this.subscribedNow;
  }

  /** Connects and starts the first load; resolves at once (start-up never waits for Redis). */
  start(): void {
    const { commands, subscriber } = connectSubscribedChannel({
      redis: this.opts.redis,
      channel: threatKeys(this.opts.keyPrefix).channel,
      logger: this.opts.logger,
      onErrorLog: {
        category: 'security',
        event_type: 'threat_state_redis_error',
        message: 'threat state: Redis connection error; the blocks in force stay enforced',
      },
      subscribed: () => {
        this.setSubscribed(true);
        void this.sync();
      },
      unsubscribed: () => this.setSubscribed(false),
      message: (text) => this.onMessage(text),
    });
    this.commands = commands;
    this.subscriber = subscriber;
    this.timer = setInterval(() => void this.sync(), this.opts.resyncMs);
    this.timer.unref();
  }

  /** Loads every block; concurrent calls share one load. Never rejects. */
  sync(): Promise<void> {
    this.syncing ??= this.load().finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private async load(): Promise<void> {
    const commands = this.commands;
    if (!commands || this.closed) return;
    this.pending = [];
    try {
      const nowMs = this.now();
      const { blocks, skipped } = await readBlocks(commands, this.opts.keyPrefix, nowMs);
      this.table.replace(blocks);
      for (const change of this.pending) this.apply(change);
      this.loaded = true;
      this.lastSync = { at: new Date().toISOString(), ok: true };
      this.opts.events?.synced({ ok: true, byKind: this.byKind() });
      if (skipped > 0)
        this.opts.logger.warn(
          { category: 'security', event_type: 'threat_state_records_skipped', skipped },
          'threat state: block records that do not parse were left out',
        );
      void pruneExpiredBlocks(commands, this.opts.keyPrefix, nowMs).catch(() => {});
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.lastSync = { at: new Date().toISOString(), ok: false, error: message };
      this.opts.events?.synced({ ok: false, byKind: this.byKind() });
    } finally {
      this.pending = undefined;
    }
  }

  private onMessage(text: string): void {
    const change = safeJson(text, threatChangeSchema);
    if (!change) {
      this.opts.logger.warn(
        { category: 'security', event_type: 'threat_state_bad_message' },
        'threat state: a change message that does not parse was ignored; reloading',
      );
      void this.sync();
      return;
    }
    this.apply(change);
    this.pending?.push(change);
  }

  private apply(change: ThreatChange): void {
    if (change.op === 'block') {
      this.table.put(change.block);
      this.opts.logger.info(
        {
          category: 'security',
          event_type: 'threat_block_applied',
          rule: change.block.rule,
          severity: change.block.severity,
          kind: change.block.kind,
          until: new Date(change.block.untilMs).toISOString(),
        },
        `threat state: ${blockMember(change.block).split(':')[0]} block in force`,
      );
    } else {
      this.table.remove(change.member);
      this.opts.logger.info(
        { category: 'security', event_type: 'threat_block_lifted', kind: change.member.split(':')[0] },
        'threat state: block lifted',
      );
    }
    this.opts.events?.changeApplied(change.op, this.byKind());
  }

  private byKind(): BlocksByKind {
    const counts: BlocksByKind = { ip: 0, user: 0, limit: 0, auth: 0 };
    for (const block of this.table.active(this.now())) counts[block.kind]++;
    return counts;
  }

  private setSubscribed(subscribed: boolean): void {
    if (subscribed === this.subscribedNow) return;
    this.subscribedNow = subscribed;
    this.opts.events?.subscription(subscribed);
  }

  status(): Record<string, unknown> {
    return {
      loaded: this.loaded,
      subscribed: this.subscribedNow,
      blocks_in_force: this.table.active(this.now()).length,
      last_sync: this.lastSync ?? null,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const client of [this.subscriber, this.commands]) {
      if (!client) continue;
      if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
      else client.disconnect();
    }
  }
}

function safeJson<T>(
  text: string,
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false } },
) {
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
