import type { Redis } from 'ioredis';
import type { CounterRequest, CounterResult, CounterStore } from './types';

// One script call per ShouldRateLimit, for every counter of every descriptor: the
// whole decision costs one round trip and is atomic. Per counter i it receives
// KEYS[2i-1] = counter, KEYS[2i] = block key and ARGV = addend, then limit, window,
// block seconds per counter. It returns {count, block ttl} per counter, where
// count = -1 means "blocked, not counted".
const script = `
local addend = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local counter, block = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[3 * i - 1])
  local window = tonumber(ARGV[3 * i])
  local block_seconds = tonumber(ARGV[3 * i + 1])
  local block_ttl = redis.call('TTL', block)
  if block_ttl ~= -2 then
    out[i] = {-1, block_ttl}
  else
    local count = redis.call('INCRBY', counter, addend)
    -- The key was just created: its window starts expiring now, once.
    if count == addend then redis.call('EXPIRE', counter, window) end
    local started = 0
    if count > limit and block_seconds > 0 then
      redis.call('SET', block, '1', 'EX', block_seconds)
      started = block_seconds
    end
    out[i] = {count, started}
  end
end
return out
`;

const commandName = 'sekishoRateLimitHit';

type HitCommand = (numKeys: number, ...keysAndArgs: Array<string | number>) => Promise<Array<[number, number]>>;

/** The Redis implementation of the limiter's counter store (single node or Sentinel). */
export class RedisCounterStore implements CounterStore {
  private readonly hit: HitCommand;

  constructor(redis: Redis) {
    // defineCommand sends EVALSHA and falls back to EVAL when the server lacks the
    // script (first use on a connection, or after a Redis restart).
    if (!(commandName in redis)) redis.defineCommand(commandName, { lua: script });
    const command = (redis as unknown as Record<string, HitCommand>)[commandName];
    if (!command) throw new Error('ioredis did not define the rate-limit script command');
    this.hit = command.bind(redis);
  }

  async increment(counters: readonly CounterRequest[], addend: number): Promise<CounterResult[]> {
    if (counters.length === 0) return [];
    const keys = counters.flatMap((c) => [c.counterKey, c.blockKey]);
    const args = counters.flatMap((c) => [c.limit, c.windowSeconds, c.blockSeconds]);
    const raw = await this.hit(keys.length, ...keys, addend, ...args);
    return raw.map(([count, ttl]): CounterResult => {
      if (count === -1) {
        // TTL -1: a block key someone set without expiry; treat it as blocked for now.
        return { blocked: true, blockTtlSeconds: ttl > 0 ? ttl : 1 };
      }
      return { blocked: false, count, blockTtlSeconds: ttl };
    });
  }
}
