// Definition → IR: resolves names, inheritance and durations, and checks every
// cross-reference. A mistake that Envoy or a policy service would silently accept (a
// permission no group grants, a per-user limit on a route without users) is an error here.
import { parseDuration } from '../definition/duration';
import type { FieldError } from '../definition/field-error';
import { templateVariable } from '../definition/routes';
import type { GatewayDefinition } from '../definition/schema';
import { buildBrowserIR } from './browser';
import { buildClusters } from './clusters';
import { buildEdgeClient } from './edge-client';
import { resolveGroups } from './groups';
import { buildMesh } from './mesh';
import { extAuthzClusterName, rateLimitClusterName } from './names';
import { checkRouteList, limitList } from './route-list';
import { buildRouteShapes } from './routes';
import { buildThreatsIR } from './threats';
import { buildListeners, fileSystemSource, type TlsFileSource } from './tls';
import type { GatewayIR, OwnerIR, PathMatchIR, RouteIR } from './types';

export type BuildResult = { ok: true; ir: GatewayIR } | { ok: false; errors: FieldError[] };

/** `files`: where the certificate files are read from (the definition's directory in compileDefinitionFile). */
export function buildIR(definition: GatewayDefinition, files: TlsFileSource = fileSystemSource()): BuildResult {
  const errors: FieldError[] = [];
  const listeners = buildListeners(definition.listeners, files, errors);

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

  const clusters = buildClusters(definition, errors);
  // After the clusters: a mesh service's cluster reaches its sidecar instead of its endpoints.
  const shadow = definition.limits.shadow;
  const mesh = buildMesh(definition, clusters, errors, { granted, shadow });
  const { extAuthz, rateLimit } = definition.policyServices;

  const limits = {
    authenticated: limitList(definition.limits.authenticated, 'limits.authenticated', shadow, errors),
    unauthenticated: limitList(definition.limits.unauthenticated, 'limits.unauthenticated', shadow, errors),
  };

  const checked = checkRouteList(definition.routes, 'routes', { granted, shadow }, errors);
  const shapes = buildRouteShapes(definition, checked, errors);
  const browser = buildBrowserIR(definition, errors);
  const routes: RouteIR[] = [];
  for (const [index, route] of definition.routes.entries()) {
    const at = `routes[${index}]`;
    const shape = shapes[index];
    const entry = checked[index];
    if (shape === undefined || entry === undefined) throw new Error(`no route shape for ${at}`);
    routes.push({
      ...shape,
      auth: route.auth,
      permissions: entry.permissions,
      owner: buildOwner(route, shape.path, definition.identity.customerId !== undefined, at, errors),
      // A route without authentication has nothing to let through; the gateway-wide setting skips it.
      dryRun: route.auth !== 'none' && (route.dryRun ?? definition.identity.dryRun),
      limits: entry.limits,
      cors: browser.routes[index]?.cors,
      securityHeaders: browser.routes[index]?.securityHeaders,
      maxRequestBodyBytes: route.maxRequestBodyBytes ?? definition.edge.maxRequestBodyBytes,
    });
  }

  const edgeClient = buildEdgeClient(definition.edge, errors);
  const threats = buildThreatsIR(definition, new Set(routes.map((route) => route.id)), errors);

  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    ir: {
      ...listeners,
      identity: {
        firebaseProjectId: definition.identity.firebase.projectId,
        groupClaim: definition.identity.groupClaim,
        defaultGroup,
        groups,
        signInProviders: definition.identity.signInProviders,
        tenants: definition.identity.tenants,
        customerIdClaim: customerIdClaim(definition.identity.customerId),
      },
      extAuthz: { clusterName: extAuthzClusterName, timeoutMs: ms(extAuthz.timeout) },
      rateLimit: {
        clusterName: rateLimitClusterName,
        timeoutMs: ms(rateLimit.timeout),
        failureMode: rateLimit.failureMode,
        ...(rateLimit.redisFailureMode ? { redisFailureMode: rateLimit.redisFailureMode } : {}),
        ...(localReplicas(rateLimit) ? { localReplicas: localReplicas(rateLimit) } : {}),
        descriptorLimitOverride: rateLimit.descriptorLimitOverride,
        perUserLimits: rateLimit.perUserLimits,
      },
      clusters,
      limits,
      routes,
      browser: browser.browser,
      ...edgeClient,
      requestBody: { defaultMaxBytes: definition.edge.maxRequestBodyBytes },
      threats,
      ...(mesh ? { mesh } : {}),
    },
  };
}

/** Durations were validated by the schema. */
function ms(text: string): number {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`unvalidated duration: ${text}`);
  return value;
}

type RouteInput = GatewayDefinition['routes'][number];

function customerIdClaim(customerId: GatewayDefinition['identity']['customerId']): string | undefined {
  if (customerId === undefined) return undefined;
  return customerId === 'uid' ? 'sub' : customerId.claim;
}

/**
 * Where ext-authz finds the value an owner check compares. A path variable must be a
 * one-segment variable of the route's own template, so its position in the path is fixed.
 */
function buildOwner(
  route: RouteInput,
  path: PathMatchIR,
  hasCustomerId: boolean,
  at: string,
  errors: FieldError[],
): OwnerIR | undefined {
  const { owner } = route;
  if (owner === undefined) return undefined;
  if (route.auth !== 'required') {
    errors.push({ path: `${at}.owner`, message: 'needs auth: required (a caller without a token owns nothing)' });
  }
  if (!hasCustomerId) {
    errors.push({
      path: `${at}.owner`,
      message: "needs identity.customerId ('uid' or { claim: <name> }): whose id the value must equal",
    });
  }
  if (owner.query !== undefined) return { kind: 'query', name: owner.query };
  const param = owner.param ?? '';
  if (path.kind !== 'template') {
    errors.push({ path: `${at}.owner.param`, message: 'needs a template match, e.g. /api/v1/customers/{id}' });
    return undefined;
  }
  const segments = path.value.split('/');
  const index = segments.findIndex((segment) => segment.startsWith('{') && templateVariable(segment) === param);
  const segment = segments[index];
  if (segment === undefined) {
    errors.push({ path: `${at}.owner.param`, message: `names no variable of the template ${path.value}` });
    return undefined;
  }
  if (segment.endsWith('=**}')) {
    errors.push({
      path: `${at}.owner.param`,
      message: `${segment} spans several segments; use a one-segment {${param}}`,
    });
    return undefined;
  }
  return { kind: 'pathSegment', param, index };
}

/** local mode's replica count: as given, else the replicas listed when there are several. */
function localReplicas(rateLimit: { localReplicas?: number; addresses?: string[] }): number | undefined {
  if (rateLimit.localReplicas !== undefined) return rateLimit.localReplicas;
  const listed = rateLimit.addresses?.length ?? 1;
  return listed > 1 ? listed : undefined;
}
