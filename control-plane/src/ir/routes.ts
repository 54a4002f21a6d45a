// Definition routes → RouteIR: what the route does (forward to one or several services,
// answer, redirect) and its upstream settings, with every cross-check Envoy would not make:
// unknown services, rewrites that cannot fit the match. What every route list is checked for
// (dead routes, ids, permissions, limits) is route-list.ts, shared with the mesh's routes.
import { parseDuration } from '../definition/duration';
import { parseHostPort } from '../definition/endpoint';
import type { FieldError } from '../definition/field-error';
import { templateVariable } from '../definition/routes';
import type { GatewayDefinition } from '../definition/schema';
import type { ParsedMatch } from './match';
import { serviceClusterName } from './names';
import type { CheckedRoute } from './route-list';
import type { ForwardIR, HeaderChangesIR, RetryIR, RewriteIR, RouteIR } from './types';

type RouteInput = GatewayDefinition['routes'][number];

/** Everything of a route but who may call it and its limits, which build.ts checks and adds. */
export type RouteShape = Omit<
  RouteIR,
  'auth' | 'permissions' | 'owner' | 'dryRun' | 'limits' | 'cors' | 'securityHeaders' | 'maxRequestBodyBytes'
>;

/** `checked`: the routes as checkRouteList (route-list.ts) resolved their ids and matches. */
export function buildRouteShapes(
  definition: GatewayDefinition,
  checked: readonly CheckedRoute[],
  errors: FieldError[],
): RouteShape[] {
  return definition.routes.map((route, index) => {
    const at = `routes[${index}]`;
    const entry = checked[index];
    if (entry === undefined) throw new Error(`no checked route for ${at}`);
    return {
      id: entry.id,
      ...entry.match,
      action: action(definition, route, entry.match, at, errors),
      responseHeaders: responseHeaders(route),
    };
  });
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
