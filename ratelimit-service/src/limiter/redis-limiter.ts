import { createHash } from 'node:crypto';
import { type KeyParts, type KeyTag, keyParts, keySlot, ruleDefinition } from './keys';
import { classifyRedisError, type RedisConnection, RedisFault } from './redis-client';
import type { Clock, LimitCheck, LimitDecision, Limiter, LimitRule } from './types';

/** The channel every block that starts is published on: "now expiry blockKey definition" (Redis ms). */
export const blockChannel = 'sekisho:rl:blocks';

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
// Time is Redis's own (TIME inside the script, read once per script call), not the
// replica's: every replica then agrees on where a window starts and how long a client must
// wait, whatever its clock says. Tests pass their clock per request instead.
//
// Batching: the decisions that arrive in one event-loop turn (up to `maxBatch` of them) go
// to Redis as one script call that decides them one after the other, each exactly as if it
// were alone: its own non-counting (a refused request counts nothing, whatever the others
// of the batch do), and a later request sees what an earlier one counted. One EVALSHA, one
// reply, one TIME, instead of one of each per decision.
//
// KEYS: per request, per check, its counter key then its block key. ARGV: per request a
// header of 3 — its number of checks, its addend, now in ms ('' = Redis's clock) — then per
// check 2: the rule, "algorithm limit window_s block_s burst advisory" (advisory 1 = shadow:
// its refusal does not refuse the request; one string built once per rule, parsed once per
// script call), and the addend ('' = the request's; a descriptor's own hits_addend, 0 =
// decide without counting). It returns per request a list, per check {code, remaining,
// reset ms, block ms}: code 0 = within the limit, 1 = over it (block ms > 0 when this
// request started a block), 2 = blocked (block ms = the block's remaining time, -1 for a
// block key without expiry). A block that starts (an enforced rule's) is also announced on
// blockChannel and kept in its domain's index of active blocks (announce, below; read by
// block-feed.ts): the one case where the script writes more than the decisions need.
const script = `
local redis_now
local function clock(given)
  local now = tonumber(given)
  if now then return now end
  if not redis_now then
    local time = redis.call('TIME')
    redis_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return redis_now
end

-- The rules of a script call, parsed once each (a batch usually holds the same few rules).
local rules = {}
local function rule_of(text)
  local r = rules[text]
  if not r then
    local alg, limit, window, block_s, burst, advisory = string.match(text, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
    r = {
      alg = tonumber(alg), limit = tonumber(limit), window = tonumber(window) * 1000,
      block_s = tonumber(block_s), burst = tonumber(burst), advisory = advisory == '1',
    }
    rules[text] = r
  end
  return r
end

-- A block that starts is announced to every replica (PUBLISH: a cluster broadcasts it) and,
-- in the domain layout, kept in its domain's index of active blocks (a sorted set by expiry,
-- in the block key's slot) for replicas that start or reconnect later. Only when a block
-- starts: the decisions themselves cost nothing more. The index is not among KEYS (a key
-- more per check on every call): its name shares the block key's hash tag, so it lives in the
-- slot the script runs in, which is what a cluster requires.
local function announce(block, definition, now, expiry)
  local at = string.format('%.0f', expiry)
  redis.call('PUBLISH', '${blockChannel}', string.format('%.0f', now) .. ' ' .. at .. ' ' .. block .. ' ' .. definition)
  local scope = string.match(block, '^(.-}):block:')
  if scope then
    local index = scope .. ':blocks'
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
    redis.call('ZADD', index, at, block .. ' ' .. definition)
    -- Relative: \`now\` may be a test's clock, not Redis's.
    if redis.call('PTTL', index) < expiry - now then redis.call('PEXPIRE', index, expiry - now) end
  end
end

-- One request: its checks are KEYS[k + 1 ..] and ARGV[a + 1 ..].
local function decide(k, a, n, default_addend, now)
  local plans = {}
  local refused = false
  -- Two checks of one call may share a key (two descriptors, one counter): the later one sees
  -- the earlier one's count (fixed, sliding) or arrival time (tokenBucket) as if already written.
  local pending = {}
  for i = 1, n do
    local counter, block = KEYS[k + 2 * i - 1], KEYS[k + 2 * i]
    local b = a + 2 * (i - 1)
    local addend = tonumber(ARGV[b + 2]) or default_addend
    local r = rule_of(ARGV[b + 1])
    local p = {
      alg = r.alg, limit = r.limit, window = r.window, block_s = r.block_s, burst = r.burst, advisory = r.advisory,
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
    local counter, block = KEYS[k + 2 * i - 1], KEYS[k + 2 * i]
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
        if not p.advisory then announce(block, ARGV[a + 2 * (i - 1) + 1], now, now + p.block_ms) end
      end
    end
    out[i] = {p.code, math.max(0, p.remaining), math.ceil(p.reset), p.block_ms}
  end
  return out
end

local answers = {}
local k, a, r = 0, 0, 0
while a < #ARGV do
  r = r + 1
  local n = tonumber(ARGV[a + 1])
  answers[r] = decide(k, a + 3, n, tonumber(ARGV[a + 2]), clock(ARGV[a + 3]))
  k = k + 2 * n
  a = a + 3 + 2 * n
end
return answers
`;

const scriptSha = createHash('sha1').update(script).digest('hex');

type Result = [code: number, remaining: number, resetMs: number, blockMs: number];

/** Per rule, what the script needs of it, built once (rules live as long as their policy). */
interface RuleArgs {
  readonly keys: KeyParts;
  /** "algorithm limit window_s block_s burst advisory", the script's rule argument. */
  readonly definition: string;
  /**
   * The cluster slot of every key of the rule, when it does not depend on the counted values
   * (the `domain` layout: the tag is the domain); undefined with the `counter` layout.
   */
  readonly slot: number | undefined;
}

/** One request (or, with the `counter` layout on a cluster, its part in one slot) waiting for its batch. */
interface Waiter {
  /** Its checks: the answer must hold as many. */
  readonly n: number;
  /** A whole request: answered with its decisions (one promise less per call); a part: with its results. */
  readonly checks: readonly LimitCheck[] | undefined;
  resolve(answer: LimitDecision[] | Result[]): void;
  reject(error: RedisFault): void;
}

/** The requests for one slot sent in one script call: their keys and arguments, in the script's layout. */
class Batch {
  readonly keys: string[] = [];
  readonly args: Array<string | number> = [];
  readonly waiters: Waiter[] = [];
}

/** Decisions one script call carries at most by default (RATELIMIT_REDIS_BATCH_MAX). */
export const defaultMaxBatch = 4;

export interface RedisLimiterHooks {
  /** Every script call (one round trip): its outcome, duration in seconds and the requests it carried. */
  scriptCall?(ok: boolean, seconds: number, requests: number): void;
}

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

const sameValues = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((value, i) => value === b[i]);

/**
 * The Redis limiter: fixed and sliding windows, token buckets, blocks. The decisions asked
 * for in one event-loop turn share one script call (per slot on a cluster), each atomic on
 * its own; a batch is sent when the turn ends (setImmediate) or when it holds `maxBatch`
 * requests. Every Redis failure rejects with a RedisFault naming what went wrong, the same
 * one for every request of the failed batch.
 */
export class RedisLimiter implements Limiter {
  private readonly ruleArgs = new WeakMap<LimitRule, RuleArgs>();
  private readonly keyTag: KeyTag;
  private readonly cluster: boolean;
  private readonly maxBatch: number;
  /**
   * The open batch per slot (one, slot 0, off a cluster), and the slots with one. Flat arrays
   * rather than a Map: a Map gaining and losing an entry every event-loop turn keeps its
   * batches (and their requests) alive into the old generation (see h2/stream-table.ts).
   */
  private readonly open: Array<Batch | undefined>;
  private readonly openSlots: number[] = [];
  private flushScheduled = false;
  private readonly flushAll = () => {
    this.flushScheduled = false;
    const { open, openSlots } = this;
    for (let i = 0; i < openSlots.length; i++) {
      const slot = openSlots[i] as number;
      const batch = open[slot];
      if (batch === undefined) continue; // sent when it filled up
      open[slot] = undefined;
      this.send(batch);
    }
    openSlots.length = 0;
  };

  constructor(
    private readonly opts: {
      redis: RedisConnection;
      hashValues: (values: readonly string[]) => string;
      /** The keys' hash tag (RATELIMIT_REDIS_KEY_TAG); default `domain`. */
      keyTag?: KeyTag;
      /** Overrides Redis's clock (tests that move time); omit it in production. */
      clock?: Clock;
      /** Requests one script call carries at most (1 = a script call per request); default 16. */
      maxBatch?: number;
      hooks?: RedisLimiterHooks;
    },
  ) {
    const { redis } = opts;
    this.keyTag = opts.keyTag ?? 'domain';
    this.cluster = 'isCluster' in redis && redis.isCluster;
    // Redis Cluster has 16,384 hash slots; everything else is slot 0.
    this.open = new Array<Batch | undefined>(this.cluster ? 16_384 : 1).fill(undefined);
    this.maxBatch = opts.maxBatch ?? defaultMaxBatch;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1)
      throw new Error(`maxBatch must be a positive integer, got ${this.maxBatch}`);
  }

  private argsOf(rule: LimitRule): RuleArgs {
    let args = this.ruleArgs.get(rule);
    if (!args) {
      const keys = keyParts(rule, this.keyTag);
      args = {
        keys,
        definition: ruleDefinition(rule),
        // The domain layout's tag is whole in the part before the values.
        slot: this.keyTag === 'domain' ? keySlot(keys.counter[0]) : undefined,
      };
      this.ruleArgs.set(rule, args);
    }
    return args;
  }

  hit(checks: readonly LimitCheck[], hitsAddend: number): Promise<LimitDecision[]> {
    const n = checks.length;
    if (n === 0) return Promise.resolve([]);
    // Envoy sends 0 when the field is unset, which means 1.
    const addend = hitsAddend > 0 ? hitsAddend : 1;
    const now = this.opts.clock?.() ?? '';
    // Keys and arguments of every check, hashing each descriptor's values once.
    const keys: string[] = new Array(2 * n);
    const rules: RuleArgs[] = new Array(n);
    let previous: { values: readonly string[]; hash: string } | undefined;
    for (let i = 0; i < n; i++) {
      const { rule, values } = checks[i] as LimitCheck;
      // The windows of one descriptor (per minute, per hour) count the same values: hash once.
      if (!previous || !sameValues(previous.values, values)) previous = { values, hash: this.opts.hashValues(values) };
      const ruleArgs = this.argsOf(rule);
      rules[i] = ruleArgs;
      keys[2 * i] = ruleArgs.keys.counter[0] + previous.hash + ruleArgs.keys.counter[1];
      keys[2 * i + 1] = ruleArgs.keys.block[0] + previous.hash + ruleArgs.keys.block[1];
    }

    const slots = this.cluster ? this.slotsOf(rules, keys) : undefined;
    if (!slots || slots.size === 1) {
      const slot = slots ? (slots.keys().next().value as number) : 0;
      return this.enqueue(slot, checks, keys, rules, addend, now, undefined) as Promise<LimitDecision[]>;
    }
    // The `counter` layout on a cluster: a part per slot, each in its slot's batch. Each part
    // is atomic on its own: a request refused in one slot may already be counted in another.
    const parts = [...slots.entries()];
    return Promise.all(
      parts.map(
        ([slot, indices]) => this.enqueue(slot, checks, keys, rules, addend, now, indices) as Promise<Result[]>,
      ),
    ).then((answers) => {
      const results: Result[] = new Array(n);
      parts.forEach(([, indices], p) => {
        indices.forEach((i, j) => {
          results[i] = (answers[p] as Result[])[j] as Result;
        });
      });
      return this.decisions(checks, results);
    });
  }

  /** The checks' indices per cluster slot. */
  private slotsOf(rules: readonly RuleArgs[], keys: readonly string[]): Map<number, number[]> {
    const slots = new Map<number, number[]>();
    for (let i = 0; i < rules.length; i++) {
      const slot = (rules[i] as RuleArgs).slot ?? keySlot(keys[2 * i] as string);
      const group = slots.get(slot);
      if (group) group.push(i);
      else slots.set(slot, [i]);
    }
    return slots;
  }

  /** Adds the checks (all, or those at `indices`) as one request of the slot's open batch. */
  private enqueue(
    slot: number,
    checks: readonly LimitCheck[],
    keys: readonly string[],
    rules: readonly RuleArgs[],
    addend: number,
    now: number | '',
    indices: readonly number[] | undefined,
  ): Promise<LimitDecision[] | Result[]> {
    let batch = this.open[slot];
    if (batch === undefined) {
      batch = new Batch();
      this.open[slot] = batch;
      this.openSlots.push(slot);
    }
    const m = indices ? indices.length : checks.length;
    const { keys: batchKeys, args } = batch;
    args.push(m, addend, now);
    for (let j = 0; j < m; j++) {
      const i = indices ? (indices[j] as number) : j;
      batchKeys.push(keys[2 * i] as string, keys[2 * i + 1] as string);
      const own = (checks[i] as LimitCheck).addend;
      args.push((rules[i] as RuleArgs).definition, own === undefined ? '' : own);
    }
    const answer = new Promise<LimitDecision[] | Result[]>((resolve, reject) => {
      (batch as Batch).waiters.push({ n: m, checks: indices ? undefined : checks, resolve, reject });
    });
    if (batch.waiters.length >= this.maxBatch) {
      this.open[slot] = undefined;
      this.send(batch);
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushAll);
    }
    return answer;
  }

  /**
   * EVALSHA, and EVAL when the server lacks the script (first use on a connection, a Redis
   * restart, SCRIPT FLUSH, a failover to a replica that never saw it): reloaded transparently.
   * (ioredis' defineCommand does the same, but copies the arguments three times more.)
   */
  private run(argv: Array<string | number>): Promise<Result[][]> {
    const { redis } = this.opts;
    return (redis.call('evalsha', argv) as Promise<Result[][]>).catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      argv[0] = script;
      return redis.call('eval', argv) as Promise<Result[][]>;
    });
  }

  /** One script call for the batch; each request gets its own answer, or the batch's one fault. */
  private send(batch: Batch): void {
    const { keys, args, waiters } = batch;
    const argv: Array<string | number> = new Array(2 + keys.length + args.length);
    argv[0] = scriptSha;
    argv[1] = keys.length;
    for (let i = 0; i < keys.length; i++) argv[2 + i] = keys[i] as string;
    for (let i = 0, at = 2 + keys.length; i < args.length; i++) argv[at + i] = args[i] as string | number;
    const started = performance.now();
    const hooks = this.opts.hooks;
    let reply: Promise<Result[][]>;
    try {
      reply = this.run(argv);
    } catch (error) {
      // Sent from setImmediate: a synchronous throw must reach the waiters, not the process.
      reply = Promise.reject(error);
    }
    reply.then(
      (answers) => {
        hooks?.scriptCall?.(true, (performance.now() - started) / 1000, waiters.length);
        const count = Array.isArray(answers) ? answers.length : undefined;
        for (let w = 0; w < waiters.length; w++) {
          const waiter = waiters[w] as Waiter;
          const results = count === waiters.length ? answers[w] : undefined;
          if (Array.isArray(results) && results.length === waiter.n)
            try {
              waiter.resolve(waiter.checks ? this.decisions(waiter.checks, results) : results);
            } catch (error) {
              // A malformed answer fails its request only; the others of the batch still get theirs.
              waiter.reject(new RedisFault('REDIS_SCRIPT', `the rate-limit script answered ${String(error)}`));
            }
          else
            waiter.reject(
              new RedisFault(
                'REDIS_SCRIPT',
                `the rate-limit script answered ${count} requests for ${waiters.length}, ${results?.length} results for ${waiter.n}`,
              ),
            );
        }
      },
      (error: unknown) => {
        hooks?.scriptCall?.(false, (performance.now() - started) / 1000, waiters.length);
        const fault = classifyRedisError(error);
        for (const waiter of waiters) waiter.reject(fault);
      },
    );
  }

  private decisions(checks: readonly LimitCheck[], results: readonly Result[]): LimitDecision[] {
    const decisions: LimitDecision[] = new Array(checks.length);
    for (let i = 0; i < checks.length; i++) {
      const { rule } = checks[i] as LimitCheck;
      const [code, remaining, resetMs, blockMs] = results[i] as Result;
      // A block key someone set without expiry (PTTL -1) counts as a block of 1 s.
      if (code === 2)
        decisions[i] = {
          rule,
          overLimit: true,
          blocked: true,
          remaining: 0,
          resetSeconds: seconds(blockMs),
          resetMs: blockMs,
        };
      else {
        // The excess that starts a block is refused for the block's length, not the window's.
        const until = blockMs > 0 ? Math.max(resetMs, blockMs) : resetMs;
        decisions[i] = {
          rule,
          overLimit: code === 1,
          blocked: false,
          remaining,
          resetSeconds: seconds(until),
          resetMs: until,
        };
      }
    }
    return decisions;
  }
}
