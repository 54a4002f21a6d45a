import { createHash } from 'node:crypto';
import type { LimitRule } from '../limiter/types';
import type { DescriptorEntry } from '../policy/compile';
import type { ConfigFile, FileDescriptor, FileUnit } from './parse';
import { unitSeconds } from './parse';

// A checked file → a tree built once per configuration, so ShouldRateLimit walks it with
// map lookups: at each depth an exact key+value beats a wildcard value (patterns in file
// order), which beats a key-only entry, and a limit applies only to a request descriptor
// exactly as deep as the limit (envoyproxy/ratelimit's documented matching). No parsing,
// no string building and no allocation per call unless the rule asks for detailed metrics.

/** How the entry at one depth of a rule's path matches. */
type Step =
  | { readonly kind: 'exact'; readonly key: string; readonly value: string; readonly valueToMetric: boolean }
  | {
      readonly kind: 'wildcard';
      readonly key: string;
      readonly pattern: string;
      readonly valueToMetric: boolean;
      /** Every value matching the pattern shares one counter (share_threshold). */
      readonly shared: boolean;
    }
  | { readonly kind: 'any'; readonly key: string; readonly valueToMetric: boolean };

/** A rate_limit of a file, as the limiter and the response need it. */
export interface FileLimit extends LimitRule {
  readonly domain: string;
  /** That project's stats key: `domain.key_value.key` along the rule's path (wildcards as written). */
  readonly statKey: string;
  /** `name` of the rate_limit ('' if none), answered as current_limit.name. */
  readonly name: string;
  readonly unit: FileUnit;
  readonly unlimited: boolean;
  readonly shadowMode: boolean;
  readonly quotaMode: boolean;
  readonly detailedMetric: boolean;
  /** Names of the rate_limits this one replaces when both match one request. */
  readonly replaces: readonly string[];
  readonly path: readonly Step[];
  /** Some step needs the request's values in the metric's rule label (detailed_metric, value_to_metric). */
  readonly dynamicLabel: boolean;
  /** Some step shares its counter across values (share_threshold). */
  readonly sharesCounter: boolean;
}

interface Level {
  readonly exact: Map<string, Map<string, TreeNode>>;
  /** Per key, wildcard patterns in file order. */
  readonly wildcards: Map<string, WildcardNode[]>;
  readonly any: Map<string, TreeNode>;
}

interface TreeNode {
  readonly limit: FileLimit | undefined;
  readonly children: Level | undefined;
}

interface WildcardNode {
  /** The pattern split on '*': ['a', 'b'] for 'a*b'. */
  readonly parts: readonly string[];
  readonly node: TreeNode;
}

export interface CompiledFileDomain {
  readonly domain: string;
  readonly limits: readonly FileLimit[];
  /** Some limit replaces others: only then does a request need the replaced-names check. */
  readonly hasReplaces: boolean;
  /** The limit for one request descriptor, or undefined when none applies at its depth. */
  match(entries: readonly DescriptorEntry[]): FileLimit | undefined;
}

/** A glob where each * matches any run of characters, without allocating. */
export function wildcardMatches(parts: readonly string[], value: string): boolean {
  const first = parts[0] as string;
  if (parts.length === 1) return value === first;
  const last = parts[parts.length - 1] as string;
  if (value.length < first.length + last.length) return false;
  if (!value.startsWith(first) || !value.endsWith(last)) return false;
  let from = first.length;
  const end = value.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i] as string;
    const at = value.indexOf(part, from);
    if (at < 0 || at + part.length > end) return false;
    from = at + part.length;
  }
  return true;
}

const emptyLevel = (): Level => ({ exact: new Map(), wildcards: new Map(), any: new Map() });

// The rule id is part of Redis keys as a hash tag ({id}): a digest of the domain and the
// rule's path is stable across reloads (a changed limit keeps counting the same window) and
// never contains braces or whitespace, whatever the file's keys and values are.
const ruleId = (domain: string, statKey: string) =>
  `file:${createHash('sha256')
    .update(JSON.stringify([domain, statKey]))
    .digest('hex')
    .slice(0, 24)}`;

export function compileConfigFile(config: ConfigFile): CompiledFileDomain {
  const { domain } = config;
  const limits: FileLimit[] = [];

  const build = (descriptors: readonly FileDescriptor[], parent: readonly Step[], parentKey: string): Level => {
    const level = emptyLevel();
    for (const d of descriptors) {
      const value = d.value ?? '';
      const valueToMetric = d.value_to_metric ?? false;
      const step: Step =
        value === ''
          ? { kind: 'any', key: d.key, valueToMetric }
          : value.includes('*')
            ? { kind: 'wildcard', key: d.key, pattern: value, valueToMetric, shared: d.share_threshold ?? false }
            : { kind: 'exact', key: d.key, value, valueToMetric };
      const path = [...parent, step];
      const statKey = `${parentKey}.${value === '' ? d.key : `${d.key}_${value}`}`;
      let limit: FileLimit | undefined;
      if (d.rate_limit) {
        const rl = d.rate_limit;
        const unit = (rl.unit?.toUpperCase() ?? 'SECOND') as FileUnit;
        limit = {
          id: ruleId(domain, statKey),
          policyName: rl.name || statKey,
          requestsPerWindow: rl.requests_per_unit ?? 0,
          windowSeconds: unitSeconds[unit],
          blockSeconds: 0,
          domain,
          statKey,
          name: rl.name ?? '',
          unit,
          unlimited: rl.unlimited ?? false,
          shadowMode: d.shadow_mode ?? false,
          // Neither refuses a request alone (quota mode: only when every quota limit is over),
          // so the limiter lets neither keep the others from counting it.
          advisory: (d.shadow_mode ?? false) || (d.quota_mode ?? false),
          quotaMode: d.quota_mode ?? false,
          detailedMetric: d.detailed_metric ?? false,
          replaces: (rl.replaces ?? []).map((r) => r.name),
          path,
          dynamicLabel: (d.detailed_metric ?? false) || path.some((s) => s.valueToMetric),
          sharesCounter: path.some((s) => s.kind === 'wildcard' && s.shared),
        };
        limits.push(limit);
      }
      const children = d.descriptors && d.descriptors.length > 0 ? build(d.descriptors, path, statKey) : undefined;
      const node: TreeNode = { limit, children };
      if (step.kind === 'any') level.any.set(d.key, node);
      else if (step.kind === 'exact') {
        const byValue = level.exact.get(d.key) ?? new Map<string, TreeNode>();
        byValue.set(value, node);
        level.exact.set(d.key, byValue);
      } else {
        const list = level.wildcards.get(d.key) ?? [];
        list.push({ parts: value.split('*'), node });
        level.wildcards.set(d.key, list);
      }
    }
    return level;
  };

  const root = build(config.descriptors ?? [], [], domain);

  const lookup = (level: Level, entry: DescriptorEntry): TreeNode | undefined => {
    const exact = level.exact.get(entry.key)?.get(entry.value);
    if (exact) return exact;
    const patterns = level.wildcards.get(entry.key);
    if (patterns) {
      for (const p of patterns) if (wildcardMatches(p.parts, entry.value)) return p.node;
    }
    return level.any.get(entry.key);
  };

  return {
    domain,
    limits,
    hasReplaces: limits.some((l) => l.replaces.length > 0),
    match(entries) {
      let level: Level | undefined = root;
      const last = entries.length - 1;
      for (let i = 0; i <= last && level; i++) {
        const node = lookup(level, entries[i] as DescriptorEntry);
        if (!node) return undefined;
        // A limit higher up the tree does not apply to a deeper request descriptor.
        if (i === last) return node.limit;
        level = node.children;
      }
      return undefined;
    },
  };
}

/** The values a limit counts by: the request's, or the pattern where the counter is shared. */
export function countedValues(limit: FileLimit, entries: readonly DescriptorEntry[]): string[] {
  return entries.map((e, i) => {
    const step = limit.path[i];
    return step?.kind === 'wildcard' && step.shared ? step.pattern : e.value;
  });
}

/**
 * The metric's rule label: the stats key, or with detailed_metric the request's own
 * key_value path, and with value_to_metric the request's value at that depth.
 */
export function metricLabel(limit: FileLimit, entries: readonly DescriptorEntry[]): string {
  if (!limit.dynamicLabel) return limit.statKey;
  let label = limit.domain;
  entries.forEach((e, i) => {
    const step = limit.path[i] as Step;
    let value: string;
    if (limit.detailedMetric) value = step.kind === 'wildcard' && step.shared ? step.pattern : e.value;
    else if (step.kind === 'exact') value = step.value;
    else if (step.valueToMetric) value = e.value;
    else value = step.kind === 'wildcard' ? step.pattern : '';
    label += value === '' ? `.${e.key}` : `.${e.key}_${value}`;
  });
  return label;
}

// Envoy's RateLimitUnit numbers (envoy.type.v3): 0 is UNKNOWN.
const overrideUnits: Readonly<Record<number, FileUnit>> = {
  1: 'SECOND',
  2: 'MINUTE',
  3: 'HOUR',
  4: 'DAY',
  5: 'MONTH',
  6: 'YEAR',
};

/**
 * The limit a request descriptor's `limit` override asks for (Envoy's dynamic limits), which
 * the reference applies instead of the file's, for any descriptor of a known domain; counted
 * per the descriptor's keys and values. undefined for an UNKNOWN unit: the file's limit applies.
 */
export function overrideLimit(
  domain: string,
  entries: readonly DescriptorEntry[],
  override: { readonly requestsPerUnit: number; readonly unit: number },
): FileLimit | undefined {
  const unit = overrideUnits[override.unit];
  if (!unit) return undefined;
  // Keys only: the label must not carry the request's values (user ids, IPs) in clear.
  const statKey = `${domain}.${entries.map((e) => e.key).join('.')}:override`;
  return {
    id: ruleId(domain, statKey),
    policyName: statKey,
    requestsPerWindow: override.requestsPerUnit,
    windowSeconds: unitSeconds[unit],
    blockSeconds: 0,
    domain,
    statKey,
    name: '',
    unit,
    unlimited: false,
    shadowMode: false,
    quotaMode: false,
    detailedMetric: false,
    replaces: [],
    path: entries.map((e) => ({ kind: 'any', key: e.key, valueToMetric: false })),
    dynamicLabel: false,
    sharesCounter: false,
  };
}
