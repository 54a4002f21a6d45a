import { createHash, createHmac } from 'node:crypto';

// Redis key layout. User ids and IP addresses never appear in clear: the values a
// rule counts by are hashed. The rule id is written as a hash tag ({id}); one call's
// script still touches keys of several rules, so it needs one Redis node (or a
// Sentinel-managed primary), not Redis Cluster.

const prefix = 'sekisho:rl:';

/** A hash { w: window start (epoch ms), c: count }, expiring at the end of its window. */
export function counterKey(ruleId: string, valueHash: string): string {
  return `${prefix}{${ruleId}}:${valueHash}`;
}

/** Present (value "1", TTL block_seconds) while the counted values are blocked for this rule. */
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
