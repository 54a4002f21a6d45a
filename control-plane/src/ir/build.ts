// Definition → IR: resolves names, inheritance and durations, and checks every
// cross-reference. A mistake that Envoy or a policy service would silently accept (a
// permission no group grants, a per-user limit on a route without users) is an error here.
import { parseDuration } from '../definition/duration';
import { isIPv4, parseHostPort } from '../definition/endpoint';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import { resolveGroups } from './groups';
import { defaultRouteId, type ParsedMatch, parseMatch } from './match';
import {
  extAuthzClusterName,
  ingressListenerName,
  ingressRouteConfigName,
  rateLimitClusterName,
  serviceClusterName,
} from './names';
import type { ClusterIR, EndpointIR, GatewayIR, LimitIR, OutlierDetectionIR, RouteIR } from './types';

export type BuildResult = { ok: true; ir: GatewayIR } | { ok: false; errors: FieldError[] };

type LimitInput = GatewayDefinition['routes'][number]['limits'][number];

export function buildIR(definition: GatewayDefinition): BuildResult {
  const errors: FieldError[] = [];

  const { groups, errors: groupErrors } = resolveGroups(definition.identity.groups);
  errors.push(...groupErrors);
  const { defaultGroup } = definition.identity;
  if (defaultGroup !== undefined && !Object.hasOwn(definition.identity.groups, defaultGroup)) {
    errors.push({ path: 'identity.defaultGroup', message: `names no group in identity.groups: "${defaultGroup}"` });
  }
  // Every permission some group grants, read from the definition so that a broken
  // inheritance chain does not also flag every route (that error is reported once, above).
  const granted = new Set(
    Object.values(definition.identity.groups).flatMap((group) => (Array.isArray(group) ? group : group.adds)),
  );

  const clusters: ClusterIR[] = [];
  for (const [name, service] of Object.entries(definition.services)) {
    clusters.push({
      name: serviceClusterName(name),
      ...discovery(service.endpoints),
      connectTimeoutMs: ms(service.connectTimeout),
      protocol: 'http1',
      healthCheckPath: service.healthCheck,
      outlierDetection: service.outlierDetection && outlierDetection(service.outlierDetection),
    });
  }
  const { extAuthz, rateLimit } = definition.policyServices;
  for (const [name, address] of [
    [extAuthzClusterName, extAuthz.address],
    [rateLimitClusterName, rateLimit.address],
  ] as const) {
    clusters.push({
      name,
      ...discovery([address]),
      connectTimeoutMs: 1000,
      protocol: 'http2',
      healthCheckPath: undefined,
      outlierDetection: undefined,
    });
  }
  clusters.sort((a, b) => compare(a.name, b.name));

  const limits = {
    authenticated: limitList(definition.limits.authenticated, 'limits.authenticated', errors),
    unauthenticated: limitList(definition.limits.unauthenticated, 'limits.unauthenticated', errors),
  };

  const routes: RouteIR[] = [];
  const idOwner = new Map<string, number>();
  for (const [index, route] of definition.routes.entries()) {
    const at = `routes[${index}]`;
    const parsed = parseMatch(route.match);
    const id = route.id ?? defaultRouteId(parsed);

    // Envoy takes the first matching route, so a route covered by an earlier one is dead.
    // (A duplicate match also duplicates the default id: report only the cause.)
    const shadowedBy = routes.findIndex((earlier) => covers(earlier, parsed));
    const firstWithId = idOwner.get(id);
    if (shadowedBy !== -1) {
      errors.push({
        path: `${at}.match`,
        message: `is never used: routes[${shadowedBy}] ("${definition.routes[shadowedBy]?.match}") comes first and matches all of its requests`,
      });
    } else if (firstWithId !== undefined) {
      errors.push({
        path: route.id === undefined ? `${at}.match` : `${at}.id`,
        message: `route id "${id}" is already used by routes[${firstWithId}]; give one of them an explicit id`,
      });
    }
    if (firstWithId === undefined) idOwner.set(id, index);

    const service = Object.hasOwn(definition.services, route.to) ? definition.services[route.to] : undefined;
    if (service === undefined) {
      errors.push({
        path: `${at}.to`,
        message: `names no service in services: "${route.to}" (services: ${Object.keys(definition.services).sort().join(', ')})`,
      });
    }

    if (parsed.path.kind === 'prefix' && route.rewrite !== undefined && !route.rewrite.endsWith('/')) {
      errors.push({
        path: `${at}.rewrite`,
        message: `replaces the prefix "${parsed.path.value}", so it must end with "/" too (e.g. "${route.rewrite}/")`,
      });
    }

    if (route.auth === 'none' && route.require.length > 0) {
      errors.push({ path: `${at}.require`, message: 'a route with auth: none has no caller to hold permissions' });
    } else {
      for (const [permissionIndex, permission] of route.require.entries()) {
        if (!granted.has(permission)) {
          errors.push({
            path: `${at}.require[${permissionIndex}]`,
            message: `permission "${permission}" is granted by no group in identity.groups, so nobody could call this route`,
          });
        }
      }
    }

    if (route.auth === 'none') {
      for (const [limitIndex, limit] of route.limits.entries()) {
        if (limit.per === 'user') {
          errors.push({
            path: `${at}.limits[${limitIndex}].per`,
            message: 'a route with auth: none has no verified user to count per; use per: ip',
          });
        }
      }
    }

    routes.push({
      id,
      method: parsed.method,
      path: parsed.path,
      clusterName: serviceClusterName(route.to),
      rewrite: route.rewrite,
      timeoutMs: service === undefined ? 0 : ms(service.timeout),
      auth: route.auth,
      permissions: [...new Set(route.require)],
      limits: limitList(route.limits, `${at}.limits`, errors),
      maxRequestBodyBytes: route.maxRequestBodyBytes ?? definition.edge.maxRequestBodyBytes,
    });
  }

  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    ir: {
      listener: {
        name: ingressListenerName,
        routeConfigName: ingressRouteConfigName,
        address: definition.listeners.http.address,
        port: definition.listeners.http.port,
        xffNumTrustedHops: definition.listeners.http.xffNumTrustedHops,
      },
      identity: {
        firebaseProjectId: definition.identity.firebase.projectId,
        groupClaim: definition.identity.groupClaim,
        defaultGroup,
        groups,
      },
      extAuthz: { clusterName: extAuthzClusterName, timeoutMs: ms(extAuthz.timeout) },
      rateLimit: {
        clusterName: rateLimitClusterName,
        timeoutMs: ms(rateLimit.timeout),
        failureMode: rateLimit.failureMode,
      },
      clusters,
      limits,
      routes,
      requestBody: { defaultMaxBytes: definition.edge.maxRequestBodyBytes },
    },
  };
}

/** Whether every request `later` matches is already taken by `earlier`. */
function covers(earlier: Pick<RouteIR, 'method' | 'path'>, later: ParsedMatch): boolean {
  if (earlier.method !== undefined && earlier.method !== later.method) return false;
  if (earlier.path.kind === 'exact') return later.path.kind === 'exact' && later.path.value === earlier.path.value;
  return later.path.value.startsWith(earlier.path.value);
}

/** Two windows of the same kind would be one rate-limit rule id, and one of them would be dead. */
function limitList(limits: readonly LimitInput[], at: string, errors: FieldError[]): LimitIR[] {
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
    };
  });
}

function discovery(addresses: readonly string[]): Pick<ClusterIR, 'discovery' | 'endpoints'> {
  const endpoints: EndpointIR[] = addresses.map((address) => {
    const parsed = parseHostPort(address);
    if ('problem' in parsed) throw new Error(`unvalidated endpoint: ${parsed.problem}`);
    return { host: parsed.host === 'localhost' ? '127.0.0.1' : parsed.host, port: parsed.port };
  });
  const allIp = endpoints.every((endpoint) => isIPv4(endpoint.host));
  return { discovery: allIp ? 'eds' : 'dns', endpoints };
}

function outlierDetection(input: NonNullable<GatewayDefinition['services'][string]['outlierDetection']>) {
  const out: OutlierDetectionIR = {};
  if (input.consecutive5xx !== undefined) out.consecutive5xx = input.consecutive5xx;
  if (input.consecutiveGatewayFailure !== undefined) out.consecutiveGatewayFailure = input.consecutiveGatewayFailure;
  if (input.interval !== undefined) out.intervalMs = ms(input.interval);
  if (input.baseEjectionTime !== undefined) out.baseEjectionTimeMs = ms(input.baseEjectionTime);
  if (input.maxEjectionPercent !== undefined) out.maxEjectionPercent = input.maxEjectionPercent;
  return out;
}

/** Durations were validated by the schema. */
function ms(text: string): number {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`unvalidated duration: ${text}`);
  return value;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
