import { createHash, createHmac } from 'node:crypto';
import type { LimitRule } from './types';

// Redis key layout. User ids and IP addresses never appear in clear: the values a
// rule counts by are hashed.
//
// Every key carries a hash tag ({…}): Redis Cluster places a key by its tag only, and a
// Lua script may touch keys of one slot only. Two layouts (RATELIMIT_REDIS_KEY_TAG):
// - domain (default): the tag is the rule's domain, so every key one ShouldRateLimit touches
//   (shared per-route counters and per-user counters alike) lives in one slot: one EVALSHA,
//   atomic non-counting of refused requests, on a cluster too; a domain's load lands on one
//   master (a hot slot).
// - counter: the tag is the rule and the counted values, so counters spread over every
//   master; one call's keys then span several slots and the limiter sends one script per
//   slot (in parallel), atomic within a slot only.
// The layout is the same on a standalone Redis, a Sentinel-managed one and a cluster, so
// moving between them keeps the counters.

export type KeyTag = 'domain' | 'counter';

const prefix = 'sekisho:rl:';

/**
 * The part of a counter key naming the rule's definition (`fixed:60s:300`,
 * `sliding:60s:300`, `bucket:1s:100:b200`): a changed limit, window or algorithm counts
 * on a key of its own and never reads a counter kept under another definition.
 */
export function definitionTag(rule: LimitRule): string {
  const algorithm = rule.algorithm ?? 'fixed';
  const base = `${rule.windowSeconds}s:${rule.requestsPerWindow}`;
  if (algorithm === 'tokenBucket') return `bucket:${base}:b${rule.burst || rule.requestsPerWindow}`;
  return `${algorithm}:${base}`;
}

const algorithmCodes = { fixed: 0, sliding: 1, tokenBucket: 2 } as const;
const definitions = new WeakMap<LimitRule, string>();

/**
 * The rule as the rate-limit script reads it, "algorithm limit window_s block_s burst
 * advisory": also the identity a published block carries, so a replica never answers a
 * changed rule (another limit, block length, mode) from a block earned under the old one.
 */
export function ruleDefinition(rule: LimitRule): string {
  let definition = definitions.get(rule);
  if (definition === undefined) {
    definition = [
      algorithmCodes[rule.algorithm ?? 'fixed'],
      rule.requestsPerWindow,
      rule.windowSeconds,
      rule.blockSeconds,
      rule.burst || rule.requestsPerWindow,
      rule.advisory ? 1 : 0,
    ].join(' ');
    definitions.set(rule, definition);
  }
  return definition;
}

/**
 * The domain as a hash tag: itself when it is safe inside braces, else a digest of it (a
 * brace would end the tag early). Rules without a domain (the limiter's own tests) share '_'.
 */
function domainTag(domain: string | undefined): string {
  if (!domain) return '_';
  if (/^[^{}]{1,100}$/.test(domain)) return domain;
  return `h${createHash('sha256').update(domain).digest('hex').slice(0, 24)}`;
}

/**
 * A key is `before + valueHash + after`; the limiter builds the two halves once per rule,
 * so the hot path costs one concatenation per key.
 */
export interface KeyParts {
  readonly counter: readonly [before: string, after: string];
  readonly block: readonly [before: string, after: string];
}

/**
 * fixed: a hash { w: window start (epoch ms), c: count }, expiring at the end of its window.
 * sliding: a sorted set of the accepted requests of the last window (score: epoch ms).
 * tokenBucket: a string, the theoretical arrival time (epoch ms) of GCRA.
 * block: present (value "1", TTL block_seconds) while the counted values are blocked for the
 * rule; it names the rule only, so a block already earned outlives a change of the limit.
 * The domain layout also has `sekisho:rl:{<domain>}:blocks`, the domain's active blocks (a
 * sorted set by expiry, "<block key> <rule definition>"), which the script keeps as blocks start.
 */
export function keyParts(rule: LimitRule, tag: KeyTag = 'domain'): KeyParts {
  const cache = partsCache[tag];
  let parts = cache.get(rule);
  if (!parts) {
    parts = buildKeyParts(rule, tag);
    cache.set(rule, parts);
  }
  return parts;
}

// Built once per rule (rules live as long as their policy or file).
const partsCache: Record<KeyTag, WeakMap<LimitRule, KeyParts>> = { domain: new WeakMap(), counter: new WeakMap() };

function buildKeyParts(rule: LimitRule, tag: KeyTag): KeyParts {
  if (tag === 'counter') {
    const before = `${prefix}{${rule.id}:`;
    return { counter: [before, `}:${definitionTag(rule)}`], block: [before, '}:block'] };
  }
  const scope = `${prefix}{${domainTag(rule.domain)}}:`;
  return {
    counter: [`${scope}${rule.id}:${definitionTag(rule)}:`, ''],
    block: [`${scope}block:${rule.id}:`, ''],
  };
}

export function counterKey(rule: LimitRule, valueHash: string, tag: KeyTag = 'domain'): string {
  const [before, after] = keyParts(rule, tag).counter;
  return before + valueHash + after;
}

export function blockKey(rule: LimitRule, valueHash: string, tag: KeyTag = 'domain'): string {
  const [before, after] = keyParts(rule, tag).block;
  return before + valueHash + after;
}

// CRC16/XMODEM (polynomial 0x1021), the checksum Redis Cluster places keys by.
const crcTable = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  crcTable[i] = crc;
}

/** The cluster slot (0…16383) of a key: CRC16 of its hash tag when it has a non-empty one, else of the key. */
export function keySlot(key: string): number {
  let bytes = Buffer.from(key);
  const open = bytes.indexOf(0x7b); // {
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ (crcTable[((crc >> 8) ^ byte) & 0xff] as number);
  return crc % 16384;
}

/** Digests remembered by a value hasher at most (then it starts afresh). */
const hashMemoSize = 10_000;

/**
 * SHA-256 of the values, truncated to 128 bits (hex). With a secret it is an HMAC:
 * an IPv4 address hashed without one can be recovered by trying all 2^32 of them. The
 * digests of the last values seen are remembered (a bounded map, emptied when full): the
 * same users and addresses come back call after call, and a digest costs more than a lookup.
 */
export function createValueHasher(secret?: string): (values: readonly string[]) => string {
  // JSON keeps ["a:b"] and ["a", "b"] apart.
  const digest = (values: readonly string[]) =>
    (secret ? createHmac('sha256', secret) : createHash('sha256')).update(JSON.stringify(values)).digest('hex');
  const memo = new Map<string, string>();
  return (values) => {
    // One value (the usual case) is its own memo key; a prefix keeps it apart from the JSON of several.
    const key = values.length === 1 ? `1${values[0]}` : JSON.stringify(values);
    let hash = memo.get(key);
    if (hash === undefined) {
      hash = digest(values).slice(0, 32);
      if (memo.size >= hashMemoSize) memo.clear();
      memo.set(key, hash);
    }
    return hash;
  };
}
