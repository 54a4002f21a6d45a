import { type KeyParts, type KeyTag, keyParts, keySlot } from './keys';
import { classifyRedisError, type RedisConnection, RedisFault } from './redis-client';
import type { Clock, LimitCheck, LimitDecision, Limiter, LimitRule } from './types';

// Every rule of every descriptor of one ShouldRateLimit is decided and counted in one Lua
// script: one round trip, atomic. The script first decides every rule without writing a
// counter, then counts the request against all of them only if no enforced rule refuses it,
// so a request refused by one rule (the per-route limit) is never counted against another
// (the per-user one), which envoyproxy/ratelimit does. An advisory rule's (shadow mode)
// refusal is decided and reported but neither refuses nor stops the others counting; the
// rule itself does not count what it would have refused, as if it were enforced.
//
// Algorithms (ARGV code 0, 1, 2):
// - fixed: windows aligned to the epoch, a hash {w: window start, c: count}. Up to twice
//   the limit gets through around a boundary (the end of one window, the start of the next).
// - sliding: a sorted set of the accepted requests of the last window (score = ms). Exact:
//   no window of that length, wherever it starts, holds more than the limit. Refused
//   requests are not logged, so a key never holds more than `limit` members.
// - tokenBucket: GCRA, one string key holding the theoretical arrival time (TAT): each
//   request moves it by window/limit; a request is allowed while TAT − burst·interval ≤ now.
//   In any span t at most burst + limit·t/window get through.
//
// Time is Redis's own (TIME inside the script), not the replica's: every replica then
// agrees on where a window starts and how long a client must wait, whatever its clock
// says. Tests pass their clock in ARGV[2] instead.
//
// KEYS: per check, its counter key then its block key. ARGV[1] = the call's addend, ARGV[2] =
// now in ms ('' = Redis's clock), then per check: algorithm, limit, window s, block s, burst,
// advisory (1 = shadow: its refusal does not refuse the request), addend ('' = the call's;
// a descriptor's own hits_addend, 0 = decide without counting).
// Per check it returns {code, remaining, reset ms, block ms}: code 0 = within the limit,
// 1 = over it (block ms > 0 when this request started a block), 2 = blocked (block ms = the
// block's remaining time, -1 for a block key without expiry).
const script = `
local default_addend = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local n = #KEYS / 2
local plans = {}
local refused = false
-- Two checks of one call may share a key (two descriptors, one counter): the later one sees
-- the earlier one's count (fixed, sliding) or arrival time (tokenBucket) as if already written.
local pending = {}
for i = 1, n do
  local counter, block = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 2 + 7 * (i - 1)
  local addend = tonumber(ARGV[a + 7]) or default_addend
  local p = {
    alg = tonumber(ARGV[a + 1]), limit = tonumber(ARGV[a + 2]), window = tonumber(ARGV[a + 3]) * 1000,
    block_s = tonumber(ARGV[a + 4]), burst = tonumber(ARGV[a + 5]), advisory = ARGV[a + 6] == '1',
    addend = addend, code = 0, remaining = 0, reset = 0, block_ms = 0,
  }
  plans[i] = p
  local blocked_for = redis.call('PTTL', block)
  if blocked_for ~= -2 then
    p.code = 2
    p.block_ms = blocked_for
  elseif p.alg == 0 then
    local start = now - now % p.window
    p.start = string.format('%.0f', start)
    local stored = redis.call('HMGET', counter, 'w', 'c')
    p.used = 0
    if stored[1] == p.start then p.used = tonumber(stored[2]) end
    p.used = p.used + (pending[counter] or 0)
    p.reset = start + p.window - now
    p.remaining = p.limit - p.used
    if p.used + addend > p.limit then p.code = 1 else pending[counter] = (pending[counter] or 0) + addend end
  elseif p.alg == 1 then
    redis.call('ZREMRANGEBYSCORE', counter, '-inf', now - p.window)
    p.used = redis.call('ZCARD', counter) + (pending[counter] or 0)
    p.remaining = p.limit - p.used
    if p.used + addend > p.limit then
      p.code = 1
      if addend > p.limit then
        p.reset = p.window
      else
        -- Room for this request once the (used + addend - limit) oldest entries have left.
        local nth = p.used + addend - p.limit - 1
        local entry = redis.call('ZRANGE', counter, nth, nth, 'WITHSCORES')
        if entry[2] then p.reset = tonumber(entry[2]) + p.window - now else p.reset = p.window end
      end
    else
      pending[counter] = (pending[counter] or 0) + addend
    end
  else
    p.interval = p.window / p.limit
    local tat = pending[counter] or tonumber(redis.call('GET', counter)) or now
    if tat < now then tat = now end
    p.tat = tat + addend * p.interval
    local allow_at = p.tat - p.burst * p.interval
    -- A thousandth of a ms absorbs the rounding of fractional intervals (1000/3 ms).
    p.remaining = math.floor((now + p.burst * p.interval - tat) / p.interval + 1e-6)
    if allow_at - now > 1e-3 then
      p.code = 1
      p.reset = allow_at - now
    else
      pending[counter] = p.tat
    end
  end
  if p.code ~= 0 and not p.advisory then refused = true end
end
local out = {}
for i = 1, n do
  local p = plans[i]
  local addend = p.addend
  local counter, block = KEYS[2 * i - 1], KEYS[2 * i]
  if p.code == 0 and not refused then
    if p.alg == 0 then
      if p.used > 0 then
        redis.call('HINCRBY', counter, 'c', addend)
      else
        -- A new window (or a new key): the counter restarts and expires when its window ends.
        redis.call('HSET', counter, 'w', p.start, 'c', addend)
        redis.call('PEXPIRE', counter, p.reset)
      end
    elseif p.alg == 1 then
      -- Members are unique: within one ms the count only grows (nothing of this ms expires).
      local stamp = string.format('%.0f', now)
      for j = 1, addend do
        redis.call('ZADD', counter, now, stamp .. ':' .. (p.used + j))
      end
      redis.call('PEXPIRE', counter, p.window)
      local oldest = redis.call('ZRANGE', counter, 0, 0, 'WITHSCORES')
      p.reset = tonumber(oldest[2]) + p.window - now
    else
      redis.call('SET', counter, string.format('%.17g', p.tat), 'PX', math.max(1, math.ceil(p.tat - now)))
    end
    if p.alg == 2 then
      p.remaining = math.floor((now + p.burst * p.interval - p.tat) / p.interval + 1e-6)
      p.reset = p.tat - now
    else
      p.remaining = p.limit - p.used - addend
    end
  elseif p.code == 0 and p.alg == 1 then
    -- Not counted (another rule refused): the window frees a place when its oldest entry leaves.
    local oldest = redis.call('ZRANGE', counter, 0, 0, 'WITHSCORES')
    if oldest[2] then p.reset = tonumber(oldest[2]) + p.window - now else p.reset = p.window end
  elseif p.code == 0 and p.alg == 2 then
    p.reset = math.max(0, p.tat - addend * p.interval - now)
  end
  if p.code == 1 then
    p.remaining = 0
    if p.block_s > 0 then
      redis.call('SET', block, '1', 'EX', p.block_s)
      p.block_ms = p.block_s * 1000
    end
  end
  out[i] = {p.code, math.max(0, p.remaining), math.ceil(p.reset), p.block_ms}
end
return out
`;

const commandName = 'sekishoRateLimitDecide';

type Result = [code: number, remaining: number, resetMs: number, blockMs: number];
type DecideCommand = (...numKeysKeysAndArgs: Array<string | number>) => Promise<Result[]>;

const algorithmCodes = { fixed: 0, sliding: 1, tokenBucket: 2 } as const;

/** Per rule, what the script needs of it, built once (rules live as long as their policy). */
interface RuleArgs {
  readonly keys: KeyParts;
  readonly args: readonly [number, number, number, number, number, number];
}

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

const sameValues = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((value, i) => value === b[i]);

/**
 * The Redis limiter: fixed and sliding windows, token buckets, blocks; one script call per
 * decision (per slot, with the `counter` key layout on a cluster). Every Redis failure
 * rejects with a RedisFault naming what went wrong.
 */
export class RedisLimiter implements Limiter {
  private readonly run: DecideCommand;
  private readonly ruleArgs = new WeakMap<LimitRule, RuleArgs>();
  private readonly keyTag: KeyTag;
  /** Keys of one call may span slots: only the `counter` layout on a cluster. */
  private readonly splitBySlot: boolean;

  constructor(
    private readonly opts: {
      redis: RedisConnection;
      hashValues: (values: readonly string[]) => string;
      /** The keys' hash tag (RATELIMIT_REDIS_KEY_TAG); default `domain`. */
      keyTag?: KeyTag;
      /** Overrides Redis's clock (tests that move time); omit it in production. */
      clock?: Clock;
    },
  ) {
    // defineCommand sends EVALSHA and falls back to EVAL when the server lacks the script
    // (first use on a connection, a Redis restart, SCRIPT FLUSH, a failover to a replica
    // that never saw it): the script is reloaded transparently.
    const { redis } = opts;
    if (!(commandName in redis)) redis.defineCommand(commandName, { lua: script });
    const command = (redis as unknown as Record<string, DecideCommand>)[commandName];
    if (!command) throw new Error('ioredis did not define the rate-limit script command');
    this.run = command.bind(redis);
    this.keyTag = opts.keyTag ?? 'domain';
    this.splitBySlot = this.keyTag === 'counter' && 'isCluster' in redis && redis.isCluster;
  }

  private argsOf(rule: LimitRule): RuleArgs {
    let args = this.ruleArgs.get(rule);
    if (!args) {
      args = {
        keys: keyParts(rule, this.keyTag),
        args: [
          algorithmCodes[rule.algorithm ?? 'fixed'],
          rule.requestsPerWindow,
          rule.windowSeconds,
          rule.blockSeconds,
          rule.burst || rule.requestsPerWindow,
          rule.advisory ? 1 : 0,
        ],
      };
      this.ruleArgs.set(rule, args);
    }
    return args;
  }

  async hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    const n = checks.length;
    if (n === 0) return [];
    // Envoy sends 0 when the field is unset, which means 1.
    const addend = hitsAddend > 0 ? hitsAddend : 1;
    // [number of keys, ...KEYS, ...ARGV] in the script's layout, built in one array.
    const argv: Array<string | number> = new Array(1 + 2 * n + 2 + 7 * n);
    argv[0] = 2 * n;
    argv[1 + 2 * n] = addend;
    argv[2 + 2 * n] = this.opts.clock?.() ?? '';
    let previous: { values: readonly string[]; hash: string } | undefined;
    for (let i = 0; i < n; i++) {
      const { rule, values } = checks[i] as LimitCheck;
      // The windows of one descriptor (per minute, per hour) count the same values: hash once.
      if (!previous || !sameValues(previous.values, values)) previous = { values, hash: this.opts.hashValues(values) };
      const { keys, args } = this.argsOf(rule);
      argv[1 + 2 * i] = keys.counter[0] + previous.hash + keys.counter[1];
      argv[2 + 2 * i] = keys.block[0] + previous.hash + keys.block[1];
      const at = 3 + 2 * n + 7 * i;
      for (let j = 0; j < 6; j++) argv[at + j] = args[j] as number;
      const own = (checks[i] as LimitCheck).addend;
      argv[at + 6] = own === undefined ? '' : own;
    }

    let results: Result[];
    try {
      results = this.splitBySlot ? await this.runPerSlot(argv, n) : await this.runScript(argv, n);
    } catch (error) {
      throw classifyRedisError(error);
    }

    return checks.map(({ rule }, i): LimitDecision => {
      const [code, remaining, resetMs, blockMs] = results[i] as Result;
      // A block key someone set without expiry (PTTL -1) counts as a block of 1 s.
      if (code === 2)
        return { rule, overLimit: true, blocked: true, remaining: 0, resetSeconds: seconds(blockMs), resetMs: blockMs };
      // The excess that starts a block is refused for the block's length, not the window's.
      const until = blockMs > 0 ? Math.max(resetMs, blockMs) : resetMs;
      return { rule, overLimit: code === 1, blocked: false, remaining, resetSeconds: seconds(until), resetMs: until };
    });
  }

  private async runScript(argv: Array<string | number>, n: number): Promise<Result[]> {
    const results = await this.run(...argv);
    if (!Array.isArray(results) || results.length !== n)
      throw new RedisFault('REDIS_SCRIPT', `the rate-limit script answered ${results?.length} results for ${n}`);
    return results;
  }

  /**
   * The `counter` layout on a cluster: one script per slot, sent at once (one round trip
   * of latency, to several masters). Each is atomic on its own: a request refused in one
   * slot may already have been counted in another.
   */
  private async runPerSlot(argv: Array<string | number>, n: number): Promise<Result[]> {
    const groups = new Map<number, number[]>();
    for (let i = 0; i < n; i++) {
      const slot = keySlot(argv[1 + 2 * i] as string);
      const group = groups.get(slot);
      if (group) group.push(i);
      else groups.set(slot, [i]);
    }
    if (groups.size === 1) return this.runScript(argv, n);
    const parts = [...groups.values()];
    const answers = await Promise.all(
      parts.map((indices) => {
        // The same layout for the checks of this slot only.
        const m = indices.length;
        const part: Array<string | number> = new Array(1 + 2 * m + 2 + 7 * m);
        part[0] = 2 * m;
        part[1 + 2 * m] = argv[1 + 2 * n] as number;
        part[2 + 2 * m] = argv[2 + 2 * n] as number | string;
        indices.forEach((i, j) => {
          part[1 + 2 * j] = argv[1 + 2 * i] as string;
          part[2 + 2 * j] = argv[2 + 2 * i] as string;
          for (let k = 0; k < 7; k++) part[3 + 2 * m + 7 * j + k] = argv[3 + 2 * n + 7 * i + k] as number | string;
        });
        return this.runScript(part, m);
      }),
    );
    const results: Result[] = new Array(n);
    parts.forEach((indices, g) => {
      indices.forEach((i, j) => {
        results[i] = (answers[g] as Result[])[j] as Result;
      });
    });
    return results;
  }
}
