// The detector's Redis: sliding counters shared by every receiver, and the block records
// ext-authz reads (layout in service-kit/src/threat-contract.ts).
import {
  blockMember,
  liftBlockScript,
  putBlockScript,
  type ThreatBlock,
  type ThreatChange,
  threatKeys,
} from '@sekisho/service-kit/threat-contract';
import type { Redis, Result } from 'ioredis';
import type { PendingCount } from './buffer';
import type { UsualPlace } from './geo';
import type { CounterWindow } from './rules';

// A hash of buckets (field: bucket index, value: the amount counted in it). Adds the amount to
// the current bucket, drops buckets older than the window and returns the window's sum; atomic,
// so two receivers adding at once each see a distinct sum and only one crosses a threshold.
const addAndSum = `
local bucket = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
local oldest = bucket - tonumber(ARGV[3]) + 1
local sum = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if tonumber(fields[i]) < oldest then redis.call('HDEL', KEYS[1], fields[i])
  else sum = sum + tonumber(fields[i + 1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return sum`;

// A sign-in is a token with an auth_time newer than the user's last: atomically, so with several
// receivers exactly one judges it. Returns the usual places (a list of JSON texts), or false
// when this auth_time was seen already.
const signInScript = `
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('LRANGE', KEYS[2], 0, -1)`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    threatSignIn(last: string, places: string, authTimeS: number, rememberMs: number): Result<string[] | null, Context>;
    threatLiftBlock(
      index: string,
      records: string,
      channel: string,
      member: string,
      change: string,
    ): Result<number, Context>;
    threatAddAndSum(
      key: string,
      bucket: number,
      amount: number,
      buckets: number,
      ttlMs: number,
    ): Result<number, Context>;
    threatPutBlock(
      index: string,
      records: string,
      channel: string,
      devices: string,
      member: string,
      untilMs: number,
      record: string,
      change: string,
    ): Result<number, Context>;
  }
}

export function defineThreatScripts(redis: Redis): void {
  redis.defineCommand('threatAddAndSum', { numberOfKeys: 1, lua: addAndSum });
  redis.defineCommand('threatPutBlock', { numberOfKeys: 4, lua: putBlockScript });
  redis.defineCommand('threatSignIn', { numberOfKeys: 2, lua: signInScript });
  redis.defineCommand('threatLiftBlock', { numberOfKeys: 3, lua: liftBlockScript });
}

export interface CountedUpdate extends PendingCount {
  before: number;
  after: number;
}

/** Adds every pending count in one pipeline; the sums come back in the same order. */
export async function addCounts(
  redis: Redis,
  prefix: string,
  counts: Array<PendingCount & { window: CounterWindow }>,
  nowMs: number,
): Promise<CountedUpdate[]> {
  const keys = threatKeys(prefix);
  const pipeline = redis.pipeline();
  for (const count of counts) {
    const { windowMs, bucketMs } = count.window;
    pipeline.threatAddAndSum(
      keys.counter(count.counter, count.subject),
      Math.floor(nowMs / bucketMs),
      count.amount,
      Math.ceil(windowMs / bucketMs),
      windowMs + bucketMs,
    );
  }
  const results = (await pipeline.exec()) ?? [];
  return counts.map((count, index) => {
    const [error, sum] = results[index] ?? [new Error('no reply')];
    if (error) throw error;
    const after = Number(sum);
    return {
      counter: count.counter,
      subject: count.subject,
      amount: count.amount,
      before: after - count.amount,
      after,
    };
  });
}

/**
 * True when this block was written (false: one for the subject already lasts as long). An
 * additional-authentication state is written with the user's trusted devices as Redis holds
 * them at that moment (its own `devices` are replaced).
 */
export async function putBlock(redis: Redis, prefix: string, block: ThreatBlock): Promise<boolean> {
  const keys = threatKeys(prefix);
  const change: ThreatChange = { op: 'block', block };
  const written = await redis.threatPutBlock(
    keys.index,
    keys.records,
    keys.channel,
    keys.devices(block.subject),
    blockMember(block),
    block.untilMs,
    JSON.stringify(block),
    JSON.stringify(change),
  );
  return written === 1;
}

/** The user's usual places when this auth_time is new for the user; undefined when seen already. */
export async function claimSignIn(
  redis: Redis,
  prefix: string,
  user: string,
  authTimeS: number,
  rememberMs: number,
): Promise<UsualPlace[] | undefined> {
  const keys = threatKeys(prefix);
  const texts = await redis.threatSignIn(keys.lastSignIn(user), keys.locations(user), authTimeS, rememberMs);
  if (texts === null) return undefined;
  return texts.flatMap((text) => {
    try {
      const place = JSON.parse(text) as Partial<UsualPlace>;
      return typeof place.latitude === 'number' && typeof place.longitude === 'number' && typeof place.atMs === 'number'
        ? [{ latitude: place.latitude, longitude: place.longitude, atMs: place.atMs }]
        : [];
    } catch {
      return [];
    }
  });
}

/** Adds a trusted sign-in's place in front, keeping the newest `keep`, forgotten after rememberMs. */
export async function recordPlace(
  redis: Redis,
  prefix: string,
  user: string,
  place: UsualPlace,
  rule: { usualLocations: number; rememberMs: number },
): Promise<void> {
  const key = threatKeys(prefix).locations(user);
  const text = JSON.stringify({ latitude: place.latitude, longitude: place.longitude, atMs: place.atMs });
  await redis
    .multi()
    .lpush(key, text)
    .ltrim(key, 0, rule.usualLocations - 1)
    .pexpire(key, rule.rememberMs)
    .exec();
}

/** True when a block was in force and is now lifted on every replica. */
export async function liftBlock(redis: Redis, prefix: string, member: string): Promise<boolean> {
  const keys = threatKeys(prefix);
  const change: ThreatChange = { op: 'unblock', member };
  return (await redis.threatLiftBlock(keys.index, keys.records, keys.channel, member, JSON.stringify(change))) === 1;
}
