import type { Logger } from '@sekisho/service-kit/logger';
import type { RedisTopology } from '@sekisho/service-kit/redis-topology';
import type { Redis } from 'ioredis';
import { connectSubscribedChannel } from '../redis-channel';
import {
  type AccountChange,
  type AccountEntry,
  type AccountField,
  type AccountView,
  accountFields,
  applyChange,
  parseFieldValue,
} from './state';

// The account state in Redis, shared by every ext-authz replica, and each replica's copy of
// it in memory. Layout under a prefix P (default `sekisho:accounts`):
//   P:disabled     hash uid → "1"
//   P:valid_after  hash uid → unix seconds (tokensValidAfterTime)
//   P:group        hash uid → group name (override of the token's group claim)
//   P:customer_id  hash uid → customer id (override of the token's customer id claim)
//   P:version      counter, incremented by every change
//   P:changes      pub/sub channel: one JSON AccountChange per change
//   P:revocations_in_firebase  sorted set "<valid_after>:<uid>" → unix second Firebase's own
//                  revokeRefreshTokens finished: the revocations that may be pruned (below)
// A change is one Lua script (field, version and message together), so a replica that
// reads the version with the hashes knows exactly which messages it has already seen.

export const defaultKeyPrefix = 'sekisho:accounts';

const hashSuffix: Record<AccountField, string> = {
  disabled: 'disabled',
  validAfter: 'valid_after',
  group: 'group',
  customerId: 'customer_id',
};

export function accountKeys(prefix: string) {
  return {
    hash: (field: AccountField) => `${prefix}:${hashSuffix[field]}`,
    version: `${prefix}:version`,
    channel: `${prefix}:changes`,
    revokedInFirebase: `${prefix}:revocations_in_firebase`,
  };
}

const changeScript = `
local uid, field, value = ARGV[1], ARGV[2], ARGV[3]
if value == '' then redis.call('HDEL', KEYS[1], uid) else redis.call('HSET', KEYS[1], uid, value) end
local version = redis.call('INCR', KEYS[2])
local message = { version = version, uid = uid, field = field }
if value == '' then message.value = cjson.null else message.value = value end
redis.call('PUBLISH', KEYS[3], cjson.encode(message))
return version
`;

/**
 * Writes one change and publishes it (the admin command's side). value null removes the
 * field. Resolves with the state's new version.
 */
export async function writeAccountChange(
  redis: Redis,
  prefix: string,
  change: Omit<AccountChange, 'version'>,
): Promise<number> {
  const keys = accountKeys(prefix);
  const value = change.value === null ? '' : change.value === true ? '1' : String(change.value);
  const version = await redis.eval(
    changeScript,
    3,
    keys.hash(change.field),
    keys.version,
    keys.channel,
    change.uid,
    change.field,
    value,
  );
  return Number(version);
}

// Pruning revocations. A revocation refuses tokens whose auth_time is before it. Once Firebase
// has revoked the user's refresh tokens too (second F), no token with such an auth_time is
// issued after F, and every one issued before F expires by F + 1 h (the fixed lifetime of a
// Firebase ID token; verify.ts allows exp the clock tolerance). From then on the entry can
// refuse nothing that is not refused as expired, so it may go. A revocation Firebase was not
// told of is different: the user's refresh token still works, every refreshed token keeps
// the old auth_time, and the entry is all that refuses them. It is never pruned.

/**
 * Records that Firebase revoked the refresh tokens of `uid` at `firebaseSecond`, for the
 * revocation stored as `validAfter` (the admin command, after revokeRefreshTokens succeeded).
 */
export async function recordFirebaseRevocation(
  redis: Redis,
  prefix: string,
  revocation: { uid: string; validAfter: number; firebaseSecond: number },
): Promise<void> {
  await redis.zadd(
    accountKeys(prefix).revokedInFirebase,
    revocation.firebaseSecond,
    `${revocation.validAfter}:${revocation.uid}`,
  );
}

const pruneScript = `
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local pruned = 0
for _, member in ipairs(members) do
  local sep = string.find(member, ':', 1, true)
  if sep then
    local seconds, uid = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    -- Only the very revocation Firebase confirmed: a later one (another second) stays.
    if redis.call('HGET', KEYS[2], uid) == seconds then
      redis.call('HDEL', KEYS[2], uid)
      local version = redis.call('INCR', KEYS[3])
      redis.call('PUBLISH', KEYS[4], cjson.encode({ version = version, uid = uid, field = 'validAfter', value = cjson.null }))
      pruned = pruned + 1
    end
  end
  redis.call('ZREM', KEYS[1], member)
end
return { pruned, #members }
`;

/**
 * Removes the revocations Firebase confirmed at least `retentionSeconds` before `nowMs`, each
 * as a published change (every replica drops it), in batches of `batch`. Atomic per batch, so
 * replicas running it at once remove each entry once. Resolves with how many were removed.
 */
export async function pruneRevocations(
  redis: Redis,
  prefix: string,
  opts: { nowMs: number; retentionSeconds: number; batch?: number },
): Promise<number> {
  const keys = accountKeys(prefix);
  const cutoff = Math.floor(opts.nowMs / 1000) - opts.retentionSeconds;
  const batch = opts.batch ?? 500;
  let total = 0;
  // Bounded: a backlog larger than this is left to the next run.
  for (let round = 0; round < 100; round++) {
    const [pruned, seen] = (await redis.eval(
      pruneScript,
      4,
      keys.revokedInFirebase,
      keys.hash('validAfter'),
      keys.version,
      keys.channel,
      String(cutoff),
      String(batch),
    )) as [number, number];
    total += pruned;
    if (seen < batch) break;
  }
  return total;
}

/** Reads the whole state and its version in one transaction. */
export async function readAccountState(
  redis: Redis,
  prefix: string,
): Promise<{ version: number; table: Map<string, AccountEntry>; skipped: number }> {
  const keys = accountKeys(prefix);
  const multi = redis.multi();
  for (const field of accountFields) multi.hgetall(keys.hash(field));
  multi.get(keys.version);
  const replies = await multi.exec();
  if (!replies) throw new Error('the state transaction was aborted');
  const table = new Map<string, AccountEntry>();
  let skipped = 0;
  accountFields.forEach((field, i) => {
    const [error, hash] = replies[i] ?? [];
    if (error) throw error;
    for (const [uid, text] of Object.entries((hash ?? {}) as Record<string, string>)) {
      const value = parseFieldValue(field, text);
      // A value no admin command writes (someone edited Redis by hand) is left out and counted.
      if (typeof value === 'symbol' || value === undefined || !applyChange(table, { uid, field, value })) skipped++;
    }
  });
  const [versionError, versionText] = replies[accountFields.length] ?? [];
  if (versionError) throw versionError;
  return { version: Number(versionText ?? 0) || 0, table, skipped };
}

export interface AccountStoreEvents {
  /** A full load finished (trigger: initial, scheduled, resubscribed, gap). */
  synced(event: { ok: boolean; trigger: SyncTrigger; seconds: number; entries: number; version: number }): void;
  subscription(subscribed: boolean): void;
  changeApplied(field: AccountField, entries: number, version: number): void;
  /** A prune run finished: how many revocations it removed (0 on error). */
  pruned?(event: { ok: boolean; removed: number }): void;
}

export type SyncTrigger = 'initial' | 'scheduled' | 'resubscribed' | 'gap';

export interface AccountStoreOptions {
  /** Where the state lives: standalone or Sentinel (service-kit/redis-topology). */
  redis: RedisTopology;
  keyPrefix: string;
  resyncMs: number;
  /** Every `intervalMs`, remove the revocations Firebase confirmed `retentionSeconds` ago (pruneRevocations); unset: never. */
  prune?: { retentionSeconds: number; intervalMs: number };
  logger: Logger;
  events?: AccountStoreEvents;
}

/**
 * One replica's copy of the account state. get() reads memory only; the copy follows Redis
 * through the change channel and is replaced whole by a full load at start, every
 * `resyncMs`, after the subscription comes back and whenever a message was missed. While
 * Redis is unreachable the last copy stays in force.
 */
export class RedisAccountStore implements AccountView {
  private table = new Map<string, AccountEntry>();
  private version = 0;
  private commands: Redis | undefined;
  private subscriber: Redis | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<number> | undefined;
  private lastPrune: { at: string; ok: boolean; removed: number; error?: string } | undefined;
  /** Messages that arrived while a full load was under way: replayed on top of it. */
  private pending: AccountChange[] | undefined;
  private syncing: Promise<void> | undefined;
  private subscribedNow = false;
  private closed = false;
  private lastSync: { at: string; ok: boolean; error?: string; trigger: SyncTrigger } | undefined;
  private lastSuccessAt: string | undefined;
  private syncs = 0;
  private skippedValues = 0;
  loaded = false;

  constructor(private readonly opts: AccountStoreOptions) {}

  get(uid: string): AccountEntry | undefined {
    return this.table.get(uid);
  }

  get subscribed(): boolean {
    return this.subscribedNow;
  }

  /** Connects and starts the first load; resolves at once (start-up never waits for Redis). */
  start(): void {
    const { commands, subscriber } = connectSubscribedChannel({
      redis: this.opts.redis,
      channel: accountKeys(this.opts.keyPrefix).channel,
      logger: this.opts.logger,
      onErrorLog: {
        category: 'technical',
        event_type: 'accounts_redis_error',
        message: 'account state: Redis connection error; keeping the last state and reconnecting',
      },
      subscribed: () => {
        this.setSubscribed(true);
        void this.sync(this.syncs === 0 ? 'initial' : 'resubscribed');
      },
      unsubscribed: () => this.setSubscribed(false),
      message: (text) => this.onMessage(text),
    });
    this.commands = commands;
    this.subscriber = subscriber;
    this.timer = setInterval(() => void this.sync('scheduled'), this.opts.resyncMs);
    this.timer.unref();
    if (this.opts.prune) {
      this.pruneTimer = setInterval(() => void this.prune(), this.opts.prune.intervalMs);
      this.pruneTimer.unref();
    }
  }

  /** One prune run now (also the timer's); concurrent calls share one. Never rejects. */
  prune(nowMs = Date.now()): Promise<number> {
    const commands = this.commands;
    const prune = this.opts.prune;
    if (!commands || !prune || this.closed) return Promise.resolve(0);
    this.pruning ??= pruneRevocations(commands, this.opts.keyPrefix, {
      nowMs,
      retentionSeconds: prune.retentionSeconds,
    })
      .then(
        (removed) => {
          this.lastPrune = { at: new Date().toISOString(), ok: true, removed };
          this.opts.events?.pruned?.({ ok: true, removed });
          if (removed > 0) {
            this.opts.logger.info(
              { category: 'technical', event_type: 'accounts_revocations_pruned', removed },
              'account state: removed revocations that can no longer refuse a token',
            );
          }
          return removed;
        },
        (error: unknown) => {
          // Redis away: the entries stay (the safe side) until the next run.
          const message = error instanceof Error ? error.message : String(error);
          this.lastPrune = { at: new Date().toISOString(), ok: false, removed: 0, error: message };
          this.opts.events?.pruned?.({ ok: false, removed: 0 });
          return 0;
        },
      )
      .finally(() => {
        this.pruning = undefined;
      });
    return this.pruning;
  }

  /** Loads the whole state; concurrent calls share one load. */
  sync(trigger: SyncTrigger): Promise<void> {
    this.syncing ??= this.load(trigger).finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private async load(trigger: SyncTrigger): Promise<void> {
    const commands = this.commands;
    if (!commands || this.closed) return;
    const started = performance.now();
    this.pending = [];
    try {
      const state = await readAccountState(commands, this.opts.keyPrefix);
      const table = state.table;
      let version = state.version;
      // Messages published after the read are replayed; earlier ones are already in it.
      for (const change of this.pending) {
        if (change.version > version) {
          applyChange(table, change);
          version = change.version;
        }
      }
      this.table = table;
      this.version = version;
      this.loaded = true;
      this.syncs++;
      this.skippedValues = state.skipped;
      this.lastSync = { at: new Date().toISOString(), ok: true, trigger };
      this.lastSuccessAt = this.lastSync.at;
      this.opts.events?.synced({
        ok: true,
        trigger,
        seconds: (performance.now() - started) / 1000,
        entries: table.size,
        version,
      });
      if (trigger !== 'scheduled') {
        this.opts.logger.info(
          {
            category: 'technical',
            event_type: 'accounts_synced',
            trigger,
            version,
            entries: table.size,
            ...(state.skipped > 0 ? { skipped_values: state.skipped } : {}),
          },
          'account state loaded from Redis',
        );
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.lastSync = { at: new Date().toISOString(), ok: false, error: message, trigger };
      this.opts.events?.synced({
        ok: false,
        trigger,
        seconds: (performance.now() - started) / 1000,
        entries: this.table.size,
        version: this.version,
      });
      // Sooner than the next scheduled resync: a replica that never loaded is not ready.
      if (!this.closed && this.retry === undefined) {
        this.retry = setTimeout(() => {
          this.retry = undefined;
          void this.sync(trigger);
        }, 1_000);
        this.retry.unref();
      }
    } finally {
      this.pending = undefined;
    }
  }

  private onMessage(text: string): void {
    const change = parseChange(text);
    if (change === undefined) {
      this.opts.logger.warn(
        { category: 'technical', event_type: 'accounts_message_invalid' },
        'account state: ignored a change message that is not one the admin command writes',
      );
      return;
    }
    if (this.pending) {
      this.pending.push(change);
      return;
    }
    if (change.version <= this.version) return;
    const missed = change.version !== this.version + 1;
    applyChange(this.table, change);
    this.version = change.version;
    this.opts.events?.changeApplied(change.field, this.table.size, this.version);
    // A gap means a message was lost (or the state was reset): the full load settles it.
    if (missed || !this.loaded) void this.sync('gap');
  }

  private setSubscribed(subscribed: boolean): void {
    if (subscribed === this.subscribedNow) return;
    this.subscribedNow = subscribed;
    this.opts.events?.subscription(subscribed);
    if (!subscribed && !this.closed) {
      this.opts.logger.warn(
        { category: 'technical', event_type: 'accounts_subscription_lost', version: this.version },
        'account state: change subscription lost; deciding from the last state until Redis is back',
      );
    }
  }

  status(): Record<string, unknown> {
    const count = (field: keyof AccountEntry) => [...this.table.values()].filter((e) => e[field] !== undefined).length;
    return {
      loaded: this.loaded,
      subscribed: this.subscribedNow,
      version: this.version,
      accounts: this.table.size,
      disabled: count('disabled'),
      revoked: count('validAfter'),
      group_overrides: count('group'),
      customer_id_overrides: count('customerId'),
      skipped_values: this.skippedValues,
      resync_interval_ms: this.opts.resyncMs,
      prune: this.opts.prune
        ? {
            retention_seconds: this.opts.prune.retentionSeconds,
            interval_ms: this.opts.prune.intervalMs,
            last: this.lastPrune ?? null,
          }
        : null,
      last_sync: this.lastSync ?? null,
      last_success_at: this.lastSuccessAt ?? null,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.syncing?.catch(() => {});
    await this.pruning;
    this.subscriber?.disconnect();
    this.commands?.disconnect();
  }
}

function parseChange(text: string): AccountChange | undefined {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof message !== 'object' || message === null) return undefined;
  const { version, uid, field, value } = message as Record<string, unknown>;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || typeof uid !== 'string') return undefined;
  if (!(accountFields as readonly unknown[]).includes(field)) return undefined;
  const parsed = parseFieldValue(field as AccountField, value);
  if (typeof parsed === 'symbol') return undefined;
  return { version, uid, field: field as AccountField, value: parsed ?? null };
}
