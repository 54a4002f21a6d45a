import { createHash, createHmac } from 'node:crypto';
import type { LimitRule } from './types';

// Redis key layout. User ids and IP addresses never appear in clear: the values a
// rule counts by are hashed. The rule id is written as a hash tag ({id}); one call's
// script still touches keys of several rules, so it needs one Redis node (or a
// Sentinel-managed primary), not Redis Cluster.

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

/**
 * fixed: a hash { w: window start (epoch ms), c: count }, expiring at the end of its window.
 * sliding: a sorted set of the accepted requests of the last window (score: epoch ms).
 * tokenBucket: a string, the theoretical arrival time (epoch ms) of GCRA.
 */
export function counterKey(rule: LimitRule, valueHash: string): string {
  return `${prefix}{${rule.id}}:${definitionTag(rule)}:${valueHash}`;
}

/**
 * Present (value "1", TTL block_seconds) while the counted values are blocked for this rule.
 * Keyed by the rule id only: a block already earned outlives a change of the limit.
 */
export function blockKey(ruleId: string, valueHash: string): string {
  return `${prefix}block:{${ruleId}}:${valueHash}`;
}

/**
 * SHA-256 of the values, truncated to 128 bits (hex). With a secret it is an HMAC:
 * an IPv4 address hashed without one can be recovered by trying all 2^32 of them.
 */
export function createValueHasher(secret?: string): (values: readonly string[]) => string {
  // JSON keeps ["a:b"] and ["a", "b"] apart.
  const digest = (values: readonly string[]) =>
    (secret ? createHmac('sha256', secret) : createHash('sha256')).update(JSON.stringify(values)).digest('hex');
  return (values) => digest(values).slice(0, 32);
}
