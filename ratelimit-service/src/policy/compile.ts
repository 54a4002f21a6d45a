import { createHash } from 'node:crypto';
import {
  RateLimitAlgorithm,
  type RateLimitPolicy,
  type RateLimitRule,
  StoreFailureMode,
} from '@sekisho/proto/sekisho/policy/v1/policy';
import type { StoreFailureMode as FailureMode } from '../limiter/resilient-limiter';
import type { LimitAlgorithm } from '../limiter/types';

/** A descriptor entry as Envoy sends it (the generated Entry type satisfies this). */
export interface DescriptorEntry {
  readonly key: string;
  readonly value: string;
}

export interface CompiledRule {
  readonly id: string;
  /** The policy's domain (the hash tag of the rule's Redis keys). */
  readonly domain: string;
  readonly requestsPerWindow: number;
  readonly windowSeconds: number;
  /** 0 = no block after the limit is exceeded. */
  readonly blockSeconds: number;
  readonly algorithm: LimitAlgorithm;
  /** tokenBucket: the bucket's size (requestsPerWindow when the policy gives none); else 0. */
  readonly burst: number;
  /** Decided, counted, logged and measured, never refusing. */
  readonly shadow: boolean;
  /** For the limiter: a shadow rule never keeps the others from counting. */
  readonly advisory: boolean;
  /** The match entries, in order; value '' = any value, counted per distinct value. */
  readonly match: readonly DescriptorEntry[];
  /** Positions of match entries with a fixed value, and those values. */
  readonly fixed: ReadonlyArray<{ readonly index: number; readonly value: string }>;
  /** Positions of match entries without a value: their values name the counter. */
  readonly counted: readonly number[];
}

export interface RuleMatch {
  readonly rule: CompiledRule;
  /** The descriptor's values at the rule's counted positions (per user, per IP...). */
  readonly values: readonly string[];
}

export interface CompiledPolicy {
  readonly domain: string;
  readonly rules: readonly CompiledRule[];
  /** The failure mode the gateway definition asks for; undefined = the service's own setting. */
  readonly storeFailureMode: FailureMode | undefined;
  /** local mode's expected replica count; undefined = the service's own setting. */
  readonly localReplicas: number | undefined;
  /** Honour a request descriptor's `limit` override (off unless the definition allows it). */
  readonly allowLimitOverride: boolean;
  /** Every rule that applies to the descriptor, in policy order. */
  match(entries: readonly DescriptorEntry[]): RuleMatch[];
}

/** Thrown for a policy that must be refused (the control plane gets a NACK with the message). */
export class PolicyError extends Error {
  override name = 'PolicyError';
}

// Rules are indexed by their exact key sequence (a tree with one level per entry), so a
// lookup costs one map access per descriptor entry plus a check of the few rules sharing that
// sequence, however many rules the policy has, and builds no string.
interface KeyNode {
  readonly next: Map<string, KeyNode>;
  /** The rules whose key sequence ends here, in policy order. */
  rules: CompiledRule[] | undefined;
}
const keyNode = (): KeyNode => ({ next: new Map(), rules: undefined });

export function compilePolicy(policy: RateLimitPolicy): CompiledPolicy {
  if (policy.domain === '') throw new PolicyError('policy has an empty domain');
  const seen = new Set<string>();
  const rules = policy.rules.map((rule, position) => {
    const compiled = compileRule(rule, position, policy.domain);
    if (seen.has(compiled.id)) throw new PolicyError(`rule id "${compiled.id}" is used more than once`);
    seen.add(compiled.id);
    return compiled;
  });

  const index = keyNode();
  for (const rule of rules) {
    let node = index;
    for (const { key } of rule.match) {
      let child = node.next.get(key);
      if (!child) {
        child = keyNode();
        node.next.set(key, child);
      }
      node = child;
    }
    if (node.rules) node.rules.push(rule);
    else node.rules = [rule];
  }

  const storeFailureMode = failureModes.get(policy.storeFailureMode);
  if (policy.storeFailureMode !== StoreFailureMode.STORE_FAILURE_MODE_UNSPECIFIED && !storeFailureMode)
    throw new PolicyError(`store_failure_mode ${policy.storeFailureMode} is not known`);
  return {
    domain: policy.domain,
    rules,
    storeFailureMode,
    localReplicas: policy.localReplicas > 0 ? policy.localReplicas : undefined,
    allowLimitOverride: policy.allowDescriptorLimitOverride,
    match(entries) {
      let node: KeyNode | undefined = index;
      for (let i = 0; i < entries.length && node; i++) node = node.next.get((entries[i] as DescriptorEntry).key);
      const candidates = node?.rules;
      if (!candidates) return [];
      const matches: RuleMatch[] = [];
      for (const rule of candidates) {
        if (rule.fixed.every(({ index: i, value }) => entries[i]?.value === value)) {
          const values: string[] = new Array(rule.counted.length);
          for (let c = 0; c < values.length; c++) values[c] = entries[rule.counted[c] as number]?.value ?? '';
          matches.push({ rule, values });
        }
      }
      return matches;
    },
  };
}

const failureModes: ReadonlyMap<StoreFailureMode, FailureMode> = new Map([
  [StoreFailureMode.STORE_FAILURE_MODE_ALLOW, 'allow'],
  [StoreFailureMode.STORE_FAILURE_MODE_DENY, 'deny'],
  [StoreFailureMode.STORE_FAILURE_MODE_LOCAL, 'local'],
]);

const algorithms: ReadonlyMap<RateLimitAlgorithm, LimitAlgorithm> = new Map([
  [RateLimitAlgorithm.FIXED_WINDOW, 'fixed'],
  [RateLimitAlgorithm.SLIDING_WINDOW, 'sliding'],
  [RateLimitAlgorithm.TOKEN_BUCKET, 'tokenBucket'],
]);

/** The control plane's own bound on sliding limits (memory: one sorted-set entry per request). */
export const maxSlidingLimit = 10_000;

function compileRule(rule: RateLimitRule, position: number, domain: string): CompiledRule {
  const where = rule.id === '' ? `rule #${position}` : `rule "${rule.id}"`;
  if (rule.id === '') throw new PolicyError(`${where} has an empty id`);
  // The id is part of a Redis hash tag ({id:…}) in the counter key layout: braces would break it.
  if (/[{}\s]/.test(rule.id)) throw new PolicyError(`${where}: id must not contain braces or whitespace`);
  if (rule.match.length === 0) throw new PolicyError(`${where} matches no descriptor entries`);
  rule.match.forEach((m, i) => {
    if (m.key === '') throw new PolicyError(`${where}: match entry #${i} has an empty key`);
  });
  if (rule.requestsPerWindow <= 0) throw new PolicyError(`${where}: requests_per_window must be greater than 0`);
  if (rule.windowSeconds <= 0) throw new PolicyError(`${where}: window_seconds must be greater than 0`);
  const algorithm = algorithms.get(rule.algorithm);
  if (!algorithm) throw new PolicyError(`${where}: algorithm ${rule.algorithm} is not known`);
  if (rule.burst !== 0 && algorithm !== 'tokenBucket')
    throw new PolicyError(`${where}: burst applies only to the TOKEN_BUCKET algorithm`);
  // A sliding window keeps one entry per accepted request of the window.
  if (algorithm === 'sliding' && rule.requestsPerWindow > maxSlidingLimit)
    throw new PolicyError(`${where}: a SLIDING_WINDOW limit must be at most ${maxSlidingLimit} per window`);

  const match = rule.match.map((m) => ({ key: m.key, value: m.value }));
  return {
    id: rule.id,
    domain,
    requestsPerWindow: rule.requestsPerWindow,
    windowSeconds: rule.windowSeconds,
    blockSeconds: rule.blockSeconds,
    algorithm,
    burst: algorithm === 'tokenBucket' ? rule.burst || rule.requestsPerWindow : 0,
    shadow: rule.shadow,
    advisory: rule.shadow,
    match,
    fixed: match.flatMap((m, index) => (m.value === '' ? [] : [{ index, value: m.value }])),
    counted: match.flatMap((m, index) => (m.value === '' ? [index] : [])),
  };
}

// Envoy's RateLimitUnit numbers (envoy.type.v3) → seconds; UNKNOWN (0) and WEEK are not overrides.
const overrideSeconds: Readonly<Record<number, number>> = {
  1: 1,
  2: 60,
  3: 3600,
  4: 86_400,
  5: 30 * 86_400,
  6: 365 * 86_400,
};

/**
 * The rule a request descriptor's `limit` override stands for, when the definition allows
 * overrides (allowLimitOverride): a fixed window of that size replacing every rule the
 * descriptor matches, counted per all of its values. undefined for a unit it cannot express or
 * a zero limit: the policy's rules apply. The id names the descriptor's keys only, hashed, so
 * a key with braces cannot break the Redis key layout.
 */
export function overrideRule(
  domain: string,
  entries: readonly DescriptorEntry[],
  override: { readonly requestsPerUnit: number; readonly unit: number },
): RuleMatch | undefined {
  const windowSeconds = overrideSeconds[override.unit];
  if (!windowSeconds || override.requestsPerUnit <= 0) return undefined;
  const keys = entries.map((e) => e.key);
  const id = `override:${createHash('sha256').update(JSON.stringify(keys)).digest('hex').slice(0, 16)}`;
  const rule: CompiledRule = {
    id,
    domain,
    requestsPerWindow: override.requestsPerUnit,
    windowSeconds,
    blockSeconds: 0,
    algorithm: 'fixed',
    burst: 0,
    shadow: false,
    advisory: false,
    match: keys.map((key) => ({ key, value: '' })),
    fixed: [],
    counted: keys.map((_, i) => i),
  };
  return { rule, values: entries.map((e) => e.value) };
}
