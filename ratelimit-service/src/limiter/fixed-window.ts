import type { Redis } from 'ioredis';
import { blockKey, counterKey } from './keys';
import type { Clock, LimitCheck, LimitDecision, Limiter } from './types';

// Fixed windows aligned to the epoch (a 60 s window starts at every whole minute), as
// envoyproxy/ratelimit counts, in one Lua script per ShouldRateLimit: every counter of
// every descriptor costs one round trip, atomically.
//
// Time is Redis's own (TIME inside the script), not the replica's: every replica then
// agrees on where a window starts and how long a client must wait, whatever its clock
// says. Tests pass their clock in ARGV[2] instead.
//
// KEYS: per counter, its counter key then its block key. ARGV[1] = addend, ARGV[2] = now
// in ms ('' = Redis's clock), then per counter: limit, window seconds, block seconds.
// Per counter it returns {count, block ms, window ms left}; count -1 = blocked, not counted,
// and block ms is the block's remaining time; otherwise block ms > 0 when this increment
// started a block.
const script = `
local addend = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local out = {}
for i = 1, #KEYS / 2 do
  local counter, block = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[3 * i])
  local window = tonumber(ARGV[3 * i + 1]) * 1000
  local block_seconds = tonumber(ARGV[3 * i + 2])
  local blocked_for = redis.call('PTTL', block)
  if blocked_for ~= -2 then
    out[i] = {-1, blocked_for, 0}
  else
    local start = now - now % window
    local left = start + window - now
    local start_text = string.format('%.0f', start)
    local count
    if redis.call('HGET', counter, 'w') == start_text then
      count = redis.call('HINCRBY', counter, 'c', addend)
    else
      -- A new window (or a new key): the counter restarts and expires when its window ends.
      redis.call('HSET', counter, 'w', start_text, 'c', addend)
      redis.call('PEXPIRE', counter, left)
      count = addend
    end
    local started = 0
    if count > limit and block_seconds > 0 then
      redis.call('SET', block, '1', 'EX', block_seconds)
      started = block_seconds * 1000
    end
    out[i] = {count, started, left}
  end
end
return out
`;

const commandName = 'sekishoRateLimitHit';

type HitCommand = (...numKeysKeysAndArgs: Array<string | number>) => Promise<Array<[number, number, number]>>;

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

const sameValues = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((value, i) => value === b[i]);

/** The Redis limiter: fixed windows, blocks, one script call per decision. */
export class FixedWindowLimiter implements Limiter {
  private readonly run: HitCommand;

  constructor(
    private readonly opts: {
      redis: Redis;
      hashValues: (values: readonly string[]) => string;
      /** Overrides Redis's clock (tests that move time); omit it in production. */
      clock?: Clock;
    },
  ) {
    // defineCommand sends EVALSHA and falls back to EVAL when the server lacks the script
    // (first use on a connection, or after a Redis restart).
    const { redis } = opts;
    if (!(commandName in redis)) redis.defineCommand(commandName, { lua: script });
    const command = (redis as unknown as Record<string, HitCommand>)[commandName];
    if (!command) throw new Error('ioredis did not define the rate-limit script command');
    this.run = command.bind(redis);
  }

  async hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    const n = checks.length;
    if (n === 0) return [];
    // Envoy sends 0 when the field is unset, which means 1.
    const addend = hitsAddend > 0 ? hitsAddend : 1;
    // [number of keys, ...KEYS, ...ARGV] in the script's layout, built in one array.
    const argv: Array<string | number> = new Array(1 + 2 * n + 2 + 3 * n);
    argv[0] = 2 * n;
    argv[1 + 2 * n] = addend;
    argv[2 + 2 * n] = this.opts.clock?.() ?? '';
    let previous: { values: readonly string[]; hash: string } | undefined;
    for (let i = 0; i < n; i++) {
      const { rule, values } = checks[i] as LimitCheck;
      // The windows of one descriptor (per minute, per hour) count the same values: hash once.
      if (!previous || !sameValues(previous.values, values)) previous = { values, hash: this.opts.hashValues(values) };
      argv[1 + 2 * i] = counterKey(rule.id, previous.hash);
      argv[2 + 2 * i] = blockKey(rule.id, previous.hash);
      argv[3 + 2 * n + 3 * i] = rule.requestsPerWindow;
      argv[4 + 2 * n + 3 * i] = rule.windowSeconds;
      argv[5 + 2 * n + 3 * i] = rule.blockSeconds;
    }

    const results = await this.run(...argv);
    if (results.length !== n) throw new Error(`the rate-limit script answered ${results.length} results for ${n}`);

    return checks.map(({ rule }, i): LimitDecision => {
      const [count, blockMs, windowLeftMs] = results[i] as [number, number, number];
      // A block key someone set without expiry (PTTL -1) counts as a block of 1 s.
      if (count === -1) return { rule, overLimit: true, blocked: true, remaining: 0, resetSeconds: seconds(blockMs) };
      const windowReset = seconds(windowLeftMs);
      return {
        rule,
        overLimit: count > rule.requestsPerWindow,
        blocked: false,
        remaining: Math.max(0, rule.requestsPerWindow - count),
        // The excess that starts a block is refused for the block's length, not the window's.
        resetSeconds: blockMs > 0 ? Math.max(windowReset, seconds(blockMs)) : windowReset,
      };
    });
  }
}
