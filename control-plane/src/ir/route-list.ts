// The checks every route list gets — the ingress's `routes` and each mesh service's `routes` —
// so both report the same mistakes with the same messages, under their own field path: a route
// an earlier one makes dead, an id used twice, a permission no group grants or no caller could
// hold, a per-user limit where nobody is verified, two limit windows of one kind.
import { parseDuration } from '../definition/duration';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import { defaultRouteId, type ParsedMatch, parseMatch, ShadowIndex } from './match';
import type { LimitIR } from './types';

type RouteInput = GatewayDefinition['routes'][number];
type LimitInput = RouteInput['limits'][number];

/** What the checks read of a route; a mesh route has no `auth` of its own (see meshRoutes). */
export interface RouteListInput {
  id?: string | undefined;
  match: RouteInput['match'];
  auth: RouteInput['auth'];
  require: readonly string[];
  limits: readonly LimitInput[];
  dryRun?: boolean | undefined;
}

export interface RouteListContext {
  /** Every permission some group grants. */
  granted: ReadonlySet<string>;
  /** limits.shadow: a limit's default. */
  shadow: boolean;
}

export interface CheckedRoute {
  /** The route's id within its list (explicit, else the match's slug). */
  id: string;
  match: ParsedMatch;
  permissions: string[];
  limits: LimitIR[];
}

/** `at`: the list's field path, e.g. `routes` or `mesh.services.<name>.routes`. */
export function checkRouteList(
  routes: readonly RouteListInput[],
  at: string,
  context: RouteListContext,
  errors: FieldError[],
): CheckedRoute[] {
  const earlierMatches = new ShadowIndex();
  const idOwner = new Map<string, number>();
  return routes.map((route, index) => {
    const routeAt = `${at}[${index}]`;
    const parsed = parseMatch(route.match);
    const id = route.id ?? defaultRouteId(parsed);

    // Envoy takes the first matching route, so a route covered by an earlier one is dead.
    // (A duplicate match also duplicates the default id: report only the cause.)
    const shadowedBy = earlierMatches.firstCovering(parsed);
    const firstWithId = idOwner.get(id);
    if (shadowedBy !== -1) {
      errors.push({
        path: `${routeAt}.match`,
        message: `is never used: ${at}[${shadowedBy}] (${describeMatch(routes[shadowedBy]?.match)}) comes first and matches all of its requests`,
      });
    } else if (firstWithId !== undefined) {
      errors.push({
        path: route.id === undefined ? `${routeAt}.match` : `${routeAt}.id`,
        message: `route id "${id}" is already used by ${at}[${firstWithId}]; give one of them an explicit id`,
      });
    }
    if (firstWithId === undefined) idOwner.set(id, index);
    earlierMatches.add(index, parsed);

    if (route.auth === 'none' && route.require.length > 0) {
      errors.push({ path: `${routeAt}.require`, message: 'a route with auth: none has no caller to hold permissions' });
    } else if (route.auth === 'optional' && route.require.length > 0) {
      errors.push({
        path: `${routeAt}.require`,
        message:
          'a route with auth: optional lets callers without a token in, who hold no permissions; use auth: required',
      });
    } else {
      for (const [permissionIndex, permission] of route.require.entries()) {
        if (!context.granted.has(permission)) {
          errors.push({
            path: `${routeAt}.require[${permissionIndex}]`,
            message: `permission "${permission}" is granted by no group in identity.groups, so nobody could call this route`,
          });
        }
      }
    }
    if (route.auth === 'none' && route.dryRun === true) {
      errors.push({ path: `${routeAt}.dryRun`, message: 'a route with auth: none decides nothing to dry-run' });
    }
    if (route.auth === 'none') {
      for (const [limitIndex, limit] of route.limits.entries()) {
        if (limit.per === 'user') {
          errors.push({
            path: `${routeAt}.limits[${limitIndex}].per`,
            message: 'a route with auth: none has no verified user to count per; use per: ip',
          });
        }
      }
    }

    return {
      id,
      match: parsed,
      permissions: [...new Set(route.require)],
      limits: limitList(route.limits, `${routeAt}.limits`, context.shadow, errors),
    };
  });
}

function describeMatch(match: RouteInput['match'] | undefined): string {
  return typeof match === 'string' ? `"${match}"` : JSON.stringify(match);
}

/** Two windows of the same kind would be one rate-limit rule id, and one of them would be dead. */
export function limitList(limits: readonly LimitInput[], at: string, shadow: boolean, errors: FieldError[]): LimitIR[] {
  const seen = new Map<string, number>();
  return limits.map((limit, index) => {
    const windowSeconds = ms(limit.window) / 1000;
    const key = `${limit.per}/${windowSeconds}`;
    const first = seen.get(key);
    if (first !== undefined) {
      errors.push({
        path: `${at}[${index}].window`,
        message: `${at}[${first}] already limits per ${limit.per} over ${limit.window}; merge them into one`,
      });
    } else seen.set(key, index);
    return {
      per: limit.per,
      requestsPerWindow: limit.limit,
      windowSeconds,
      blockSeconds: limit.blockFor === undefined ? 0 : ms(limit.blockFor) / 1000,
      algorithm: limit.algorithm,
      burst: limit.algorithm === 'tokenBucket' ? (limit.burst ?? limit.limit) : 0,
      shadow: limit.shadow ?? shadow,
    };
  });
}

/** Durations were validated by the schema. */
function ms(text: string): number {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`unvalidated duration: ${text}`);
  return value;
}
