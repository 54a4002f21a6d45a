// Route matches: "METHOD /path" or "/path" (a trailing "/*" matches every path under it), or
// the object form with several methods, a regex or URI template path, header and query
// conditions. Also the default route id and the shadowing check, both from the parsed match.
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { matchPattern, type routeMatch } from '../definition/routes';
import type { RouteIR, ValueMatchIR } from './types';

export type ParsedMatch = Pick<RouteIR, 'methods' | 'path' | 'headers' | 'query'>;

type MatchInput = z.output<typeof routeMatch>;
type ValueMatchInput = Exclude<MatchInput, string>['headers'][number];

/** Only called on matches the schema accepted. */
export function parseMatch(input: MatchInput): ParsedMatch {
  if (typeof input === 'string') {
    const parsed = matchPattern.exec(input);
    if (!parsed) throw new Error(`unvalidated route match: ${input}`);
    const [, method, path = '/', star] = parsed;
    return {
      methods: method === undefined ? [] : [method],
      path: { kind: star ? 'prefix' : 'exact', value: path },
      headers: [],
      query: [],
    };
  }
  const path =
    input.path !== undefined
      ? ({ kind: 'exact', value: input.path } as const)
      : input.prefix !== undefined
        ? ({ kind: 'prefix', value: input.prefix } as const)
        : input.regex !== undefined
          ? ({ kind: 'regex', value: input.regex } as const)
          : ({ kind: 'template', value: input.template ?? '' } as const);
  return {
    methods: [...(input.methods ?? [])],
    path,
    headers: input.headers.map(valueMatch),
    query: input.query.map((condition) => valueMatch({ ...condition, invert: false })),
  };
}

function valueMatch(input: ValueMatchInput): ValueMatchIR {
  const [kind, value] =
    input.exact !== undefined
      ? (['exact', input.exact] as const)
      : input.prefix !== undefined
        ? (['prefix', input.prefix] as const)
        : input.regex !== undefined
          ? (['regex', input.regex] as const)
          : (['present', ''] as const);
  return { name: input.name, kind, value, invert: input.invert };
}

/**
 * The default route id: a slug of methods and path, stable across edits of other routes,
 * e.g. "POST /api/v1/appointments" → post-api-v1-appointments, "/api/v1/auth/*" →
 * api-v1-auth-prefix (so it never collides with the exact "/api/v1/auth"). Regex and
 * template paths say so too; header and query conditions add a short hash of themselves,
 * so two routes differing only in a condition get different ids.
 */
export function defaultRouteId(match: ParsedMatch): string {
  const words = [
    ...match.methods.map((method) => method.toLowerCase()),
    ...match.path.value.toLowerCase().split(/[^a-z0-9]+/),
  ];
  if (match.path.kind !== 'exact') words.push(match.path.kind);
  if (match.path.kind === 'regex') words.push(shortHash(match.path.value));
  if (match.headers.length > 0 || match.query.length > 0) {
    words.push(shortHash(JSON.stringify([match.headers, match.query])));
  }
  return words.filter((word) => word !== '').join('-') || 'root';
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/**
 * Whether every request `later` matches is certainly taken by `earlier`. Only claimed
 * when provable from the match's shape: unknown (regex against prefix, conditions on
 * one side) means "not covered", so a valid definition is never refused.
 */
export function covers(earlier: ParsedMatch, later: ParsedMatch): boolean {
  if (!conditionsCover(earlier, later)) return false;
  if (earlier.methods.length > 0) {
    if (later.methods.length === 0 || !later.methods.every((method) => earlier.methods.includes(method))) return false;
  }
  const [e, l] = [earlier.path, later.path];
  switch (e.kind) {
    case 'exact':
      return l.kind === 'exact' && l.value === e.value;
    case 'prefix':
      // Every path a template matches starts with its literal part before the first variable.
      if (l.kind === 'template') return literalLead(l.value).startsWith(e.value);
      return (l.kind === 'exact' || l.kind === 'prefix') && l.value.startsWith(e.value);
    case 'regex':
    case 'template':
      return l.kind === e.kind && l.value === e.value;
  }
}

/** The earlier route's conditions must all appear, identically, in the later one's. */
function conditionsCover(earlier: ParsedMatch, later: ParsedMatch): boolean {
  if (earlier.headers.length === 0 && earlier.query.length === 0) return true;
  const laterHeaders = new Set(later.headers.map(conditionKey));
  const laterQuery = new Set(later.query.map(conditionKey));
  return (
    earlier.headers.every((condition) => laterHeaders.has(conditionKey(condition))) &&
    earlier.query.every((condition) => laterQuery.has(conditionKey(condition)))
  );
}

function conditionKey(condition: ValueMatchIR): string {
  return JSON.stringify(condition);
}

/**
 * The first earlier route that `covers` a later one, without comparing every pair: a route can
 * only be covered by an earlier one with the same exact, regex or template path, or by an
 * earlier prefix that begins its path, so only those are tried (`covers` still decides). With
 * 10,000 routes the pairwise scan was most of the compile time.
 */
export class ShadowIndex {
  /** `<kind> <value>` of exact, regex and template paths → indices of the routes, ascending. */
  private readonly samePath = new Map<string, Array<{ index: number; match: ParsedMatch }>>();
  /** Prefix value → indices of the routes with that prefix, ascending. */
  private readonly prefixes = new Map<string, Array<{ index: number; match: ParsedMatch }>>();
  /** Lengths of the prefixes above, so a lookup tries only those lengths. */
  private readonly prefixLengths = new Set<number>();

  add(index: number, match: ParsedMatch): void {
    const { kind, value } = match.path;
    if (kind === 'prefix') {
      append(this.prefixes, value, { index, match });
      this.prefixLengths.add(value.length);
    } else {
      append(this.samePath, `${kind} ${value}`, { index, match });
    }
  }

  /** The lowest index of an added route that covers `later`, or -1. */
  firstCovering(later: ParsedMatch): number {
    const { kind, value } = later.path;
    let first = -1;
    const consider = (candidates: Array<{ index: number; match: ParsedMatch }> | undefined) => {
      for (const candidate of candidates ?? []) {
        if (first !== -1 && candidate.index >= first) return;
        if (covers(candidate.match, later)) {
          first = candidate.index;
          return;
        }
      }
    };
    // An exact earlier path covers only the same exact path; regex and template only their own.
    consider(this.samePath.get(`${kind} ${value}`));
    const lead = kind === 'template' ? literalLead(value) : kind === 'regex' ? undefined : value;
    if (lead !== undefined) {
      for (const length of this.prefixLengths) {
        if (length <= lead.length) consider(this.prefixes.get(lead.slice(0, length)));
      }
    }
    return first;
  }
}

function append<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

function literalLead(template: string): string {
  const brace = template.indexOf('{');
  return brace === -1 ? template : template.slice(0, brace);
}
