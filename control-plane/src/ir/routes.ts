// Definition routes → RouteIR: the match, what the route does (forward to one or several
// services, answer, redirect) and its upstream settings, with every cross-check Envoy would
// not make: unknown services, dead routes, rewrites that cannot fit the match.
import { parseDuration } from '../definition/duration';
import { parseHostPort } from '../definition/endpoint';
import type { FieldError } from '../definition/field-error';
import { templateVariable } from '../definition/routes';
import type { GatewayDefinition } from '../definition/schema';
import { defaultRouteId, type ParsedMatch, parseMatch, ShadowIndex } from './match';
import { serviceClusterName } from './names';
import type { ForwardIR, HeaderChangesIR, RetryIR, RewriteIR, RouteIR } from './types';

type RouteInput = GatewayDefinition['routes'][number];

/** Everything of a route but who may call it and its limits, which build.ts checks and adds. */
export type RouteShape = Omit<
  RouteIR,
  'auth' | 'permissions' | 'owner' | 'dryRun' | 'limits' | 'cors' | 'securityHeaders' | 'maxRequestBodyBytes'
>;

export function buildRouteShapes(definition: GatewayDefinition, errors: FieldError[]): RouteShape[] {
  const shapes: RouteShape[] = [];
  const earlierMatches = new ShadowIndex();
  const idOwner = new Map<string, number>();
  for (const [index, route] of definition.routes.entries()) {
    const at = `routes[${index}]`;
    const parsed = parseMatch(route.match);
    const id = route.id ?? defaultRouteId(parsed);

    // Envoy takes the first matching route, so a route covered by an earlier one is dead.
    // (A duplicate match also duplicates the default id: report only the cause.)
    const shadowedBy = earlierMatches.firstCovering(parsed);
    const firstWithId = idOwner.get(id);
    if (shadowedBy !== -1) {
      errors.push({
        path: `${at}.match`,
        message: `is never used: routes[${shadowedBy}] (${describeMatch(definition.routes[shadowedBy]?.match)}) comes first and matches all of its requests`,
      });
    } else if (firstWithId !== undefined) {
      errors.push({
        path: route.id === undefined ? `${at}.match` : `${at}.id`,
        message: `route id "${id}" is already used by routes[${firstWithId}]; give one of them an explicit id`,
      });
    }
    if (firstWithId === undefined) idOwner.set(id, index);
    earlierMatches.add(index, parsed);

    shapes.push({
      id,
      ...parsed,
      action: action(definition, route, parsed, at, errors),
      responseHeaders: responseHeaders(route),
    });
  }
  return shapes;
}

function describeMatch(match: RouteInput['match'] | undefined): string {
  return typeof match === 'string' ? `"${match}"` : JSON.stringify(match);
}

function action(
  definition: GatewayDefinition,
  route: RouteInput,
  parsed: ParsedMatch,
  at: string,
  errors: FieldError[],
): RouteIR['action'] {
  if ((route.directResponse !== undefined || route.redirect !== undefined) && route.limits.length > 0) {
    // The rate-limit actions live in Envoy's RouteAction, which only forwarding routes have.
    errors.push({
      path: `${at}.limits`,
      message: 'only a route that forwards (to or split) can be rate-limited; Envoy answers this one itself',
    });
  }
  if (route.directResponse !== undefined) {
    const { status, body, contentType } = route.directResponse;
    return { kind: 'direct', status, body, contentType };
  }
  if (route.redirect !== undefined) {
    const { scheme, host, port, path, prefixRewrite, status, stripQuery } = route.redirect;
    if (prefixRewrite !== undefined && parsed.path.kind !== 'prefix') {
      errors.push({ path: `${at}.redirect.prefixRewrite`, message: 'needs a prefix match; use path instead' });
    }
    return { kind: 'redirect', scheme, host, port, path, prefixRewrite, status, stripQuery };
  }
  return forward(definition, route, parsed, at, errors);
}

function forward(
  definition: GatewayDefinition,
  route: RouteInput,
  parsed: ParsedMatch,
  at: string,
  errors: FieldError[],
): ForwardIR {
  const targets = route.split?.map((entry, index) => ({
    service: entry.to,
    weight: entry.weight,
    at: `${at}.split[${index}].to`,
  })) ?? [{ service: route.to ?? '', weight: 1, at: `${at}.to` }];
  const services = targets.map((target) => {
    const service = Object.hasOwn(definition.services, target.service)
      ? definition.services[target.service]
      : undefined;
    if (service === undefined) {
      errors.push({
        path: target.at,
        message: `names no service in services: "${target.service}" (services: ${Object.keys(definition.services).sort().join(', ')})`,
      });
    }
    return service;
  });
  // A split waits as long as its slowest service allows, unless the route says otherwise.
  const timeoutMs =
    route.timeout !== undefined
      ? ms(route.timeout)
      : Math.max(0, ...services.map((service) => (service === undefined ? 0 : ms(service.timeout))));
  const hashing = services.find((service) => service?.loadBalancing.hashOn !== undefined);
  return {
    kind: 'forward',
    clusters: targets.map((target, index) => {
      const service = services[index];
      return {
        name: serviceClusterName(target.service),
        weight: target.weight,
        host: service === undefined ? '' : upstreamHost(service),
      };
    }),
    forwardAuthorization: services.every((service) => service?.receiveAuthorization === true),
    rewrite: rewrite(route.rewrite, parsed, at, errors),
    timeoutMs,
    idleTimeoutMs: route.idleTimeout === undefined ? undefined : ms(route.idleTimeout),
    retries: retries(route.retries, `${at}.retries`, errors),
    requestHeaders: headerChanges(route.requestHeaders),
    hashOn: hashing?.loadBalancing.hashOn,
  };
}

function rewrite(
  input: RouteInput['rewrite'],
  parsed: ParsedMatch,
  at: string,
  errors: FieldError[],
): RewriteIR | undefined {
  if (input === undefined) return undefined;
  if (typeof input !== 'string') return { kind: 'regex', regex: input.regex, substitution: input.substitution };
  const path = parsed.path;
  if (path.kind === 'template') {
    const known = new Set(variables(path.value));
    const unknown = variables(input).filter((name) => !known.has(name));
    if (!/^\/(?:[^{}/]+|\{[a-z_][a-z0-9_]*\})?(?:\/(?:[^{}/]*|\{[a-z_][a-z0-9_]*\}))*$/.test(input)) {
      errors.push({ path: `${at}.rewrite`, message: 'must be a path whose segments are literals or {variable}' });
    } else if (unknown.length > 0) {
      errors.push({
        path: `${at}.rewrite`,
        message: `uses ${unknown.map((name) => `{${name}}`).join(', ')}, which the match template does not capture`,
      });
    }
    return { kind: 'template', value: input };
  }
  if (input.includes('{') || input.includes('}')) {
    errors.push({ path: `${at}.rewrite`, message: 'uses {variables}, which only a template match captures' });
  } else if (path.kind === 'regex') {
    errors.push({
      path: `${at}.rewrite`,
      message: 'a regex match has no prefix to replace; use { regex, substitution }',
    });
  } else if (path.kind === 'prefix' && !input.endsWith('/') && path.value.endsWith('/')) {
    errors.push({
      path: `${at}.rewrite`,
      message: `replaces the prefix "${path.value}", so it must end with "/" too (e.g. "${input}/")`,
    });
  }
  return { kind: 'prefix', value: input };
}

function variables(template: string): string[] {
  return template
    .split('/')
    .filter((segment) => segment.startsWith('{'))
    .map(templateVariable);
}

/** Today's safe default when the route says nothing: connection failures only, twice. */
export function retries(input: RouteInput['retries'], at: string, errors: FieldError[]): RetryIR {
  const value = input ?? {
    on: ['connect-failure', 'refused-stream'],
    count: 2,
    statusCodes: [],
    backOff: { base: '25ms', max: '250ms' },
  };
  if (value.on.includes('retriable-status-codes') !== value.statusCodes.length > 0) {
    errors.push({
      path: `${at}.statusCodes`,
      message: 'statusCodes and the retriable-status-codes condition go together',
    });
  }
  const baseMs = ms(value.backOff.base);
  const maxMs = value.backOff.max === undefined ? undefined : ms(value.backOff.max);
  if (maxMs !== undefined && maxMs < baseMs) {
    errors.push({ path: `${at}.backOff.max`, message: 'must not be shorter than backOff.base' });
  }
  return {
    on: [...new Set(value.on)],
    count: value.count,
    statusCodes: [...new Set(value.statusCodes)],
    perTryTimeoutMs: value.perTryTimeout === undefined ? undefined : ms(value.perTryTimeout),
    perTryIdleTimeoutMs: value.perTryIdleTimeout === undefined ? undefined : ms(value.perTryIdleTimeout),
    backOff: { baseMs, maxMs },
  };
}

/** A direct response's body type is a response header the route's own settings may override. */
function responseHeaders(route: RouteInput): HeaderChangesIR {
  const changes = headerChanges(route.responseHeaders);
  const direct = route.directResponse;
  if (direct?.body === undefined || changes.set.some((h) => h.name === 'content-type')) return changes;
  return { ...changes, set: [{ name: 'content-type', value: direct.contentType }, ...changes.set] };
}

function headerChanges(input: RouteInput['requestHeaders']): HeaderChangesIR {
  const pairs = (record: Record<string, string> | undefined) =>
    Object.entries(record ?? {}).map(([name, value]) => ({ name, value }));
  return { add: pairs(input?.add), set: pairs(input?.set), remove: [...new Set(input?.remove ?? [])] };
}

/** Durations were validated by the schema. */
function ms(text: string): number {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`unvalidated duration: ${text}`);
  return value;
}

/**
 * The Host a service receives: its own setting, else its first endpoint's host (without the
 * port, so moving an endpoint to another port changes only EDS, never the routes).
 */
function upstreamHost(service: GatewayDefinition['services'][string]): string {
  if (service.host !== undefined) return service.host;
  const first = parseHostPort(service.endpoints[0] ?? '');
  if ('problem' in first) throw new Error(`unvalidated endpoint: ${first.problem}`);
  return first.host;
}
