import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileDefinition } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { type MessageCodec, renderAny, unpack } from './any';
import { httpFilterNames } from './filter-names';
import { translateSidecar } from './sidecar/index';

// policyServices.rateLimit.perUserLimits: which routes carry which families, which ratelimit
// filters exist, and that the rules ext-authz gets are exactly the ones the rate-limit service
// gets by default.

const testdata = resolve(import.meta.dirname, 'testdata/in');
const ingressYaml = parse(readFileSync(resolve(testdata, 'ratelimit-user-limits-in-ext-authz.yaml'), 'utf8'));
const meshYaml = parse(readFileSync(resolve(testdata, 'mesh-user-limits-in-ext-authz.yaml'), 'utf8'));

function compile(definition: Record<string, unknown>, perUserLimits: 'ext-authz' | 'rate-limit-service' | undefined) {
  const copy = structuredClone(definition) as { policyServices: { rateLimit: Record<string, unknown> } };
  if (perUserLimits === undefined) delete copy.policyServices.rateLimit.perUserLimits;
  else copy.policyServices.rateLimit.perUserLimits = perUserLimits;
  const compiled = compileDefinition(copy, { baseDir: testdata });
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
  return compiled;
}

const only = <T>(resources: ResourcesByType, typeUrl: string, codec: MessageCodec<T>): T[] =>
  (resources.get(typeUrl) ?? []).map((r) => unpack(codec, r.resource));

function contexts(resources: ResourcesByType): Record<string, Record<string, string>> {
  const [config] = only(resources, typeUrls.route, RouteConfiguration);
  return Object.fromEntries(
    (config?.virtualHosts[0]?.routes ?? [])
      .filter((route) => route.typedPerFilterConfig[httpFilterNames.extAuthz] !== undefined)
      .map((route) => {
        const perRoute = unpack(ExtAuthzPerRoute, route.typedPerFilterConfig[httpFilterNames.extAuthz] as Any);
        return [route.name, perRoute.checkSettings?.contextExtensions ?? {}];
      }),
  );
}

const stages = (resources: ResourcesByType) =>
  only(resources, typeUrls.route, RouteConfiguration)
    .flatMap((config) => config.virtualHosts.flatMap((host) => host.routes))
    .map((route) => [route.name, (route.route?.rateLimits ?? []).map((limit) => limit.stage)] as const)
    .filter(([, list]) => list.length > 0);

/** The ratelimit http filters of every listener (their Anys expanded), in chain order. */
function filterNames(resources: ResourcesByType): string[] {
  return (resources.get(typeUrls.listener) ?? []).flatMap(
    (r) => JSON.stringify(renderAny(r.resource)).match(/"name":"[a-z.]+ratelimit[a-z_]*"/g) ?? [],
  );
}

const policies = (resources: ResourcesByType) => ({
  authz: only(resources, typeUrls.authzPolicy, AuthzPolicy)[0],
  rateLimit: only(resources, typeUrls.rateLimitPolicy, RateLimitPolicy)[0],
});

describe('perUserLimits', () => {
  it.each([
    ['GET /api/v1/customer/profile', 'get-api-v1-customer-profile', 'authenticated'],
    ['a route with its own per-user limit', 'booking-create', 'authenticated,route'],
    ['an auth: none route with a per-IP limit', 'api-v1-auth-prefix', undefined],
    ['an auth: none route', 'get-api-v1-public-prefix', undefined],
  ])('ext-authz: %s (%s) carries sekisho.user_limits %j', (_what, routeId, families) => {
    const context = contexts(compile(ingressYaml, 'ext-authz').resources)[routeId];
    expect(context).toBeDefined();
    expect(context?.[authzContextKeys.userLimits]).toBe(families);
  });

  it('rate-limit-service (the default): no route context names a family', () => {
    for (const mode of [undefined, 'rate-limit-service'] as const) {
      for (const context of Object.values(contexts(compile(ingressYaml, mode).resources))) {
        expect(context[authzContextKeys.userLimits]).toBeUndefined();
      }
    }
  });

  it('ext-authz: no ratelimit filter after ext_authz, and no route sends a stage-0 descriptor', () => {
    const moved = compile(ingressYaml, 'ext-authz').resources;
    expect(filterNames(moved)).toEqual([`"name":"${httpFilterNames.rateLimitBeforeAuth}"`]);
    expect(stages(moved).flatMap(([, list]) => list)).not.toContain(0);
    const counted = compile(ingressYaml, undefined).resources;
    expect(filterNames(counted)).toEqual([
      `"name":"${httpFilterNames.rateLimitBeforeAuth}"`,
      `"name":"${httpFilterNames.rateLimit}"`,
    ]);
    expect(stages(counted).flatMap(([, list]) => list)).toContain(0);
  });

  it('ext-authz gets exactly the per-user rules the rate-limit service gets by default, and the service keeps the rest', () => {
    const moved = policies(compile(ingressYaml, 'ext-authz').resources);
    const counted = policies(compile(ingressYaml, undefined).resources);
    const perUser = (counted.rateLimit?.rules ?? []).filter((rule) => rule.match.some((m) => m.key === 'user'));
    expect(perUser.map((rule) => rule.id)).toEqual([
      'authenticated/user/60s',
      'authenticated/user/3600s',
      'route:booking-create/user/60s',
    ]);
    expect(moved.authz?.userLimits?.rules).toEqual(perUser);
    expect(moved.authz?.userLimits?.domain).toBe(counted.rateLimit?.domain);
    expect(moved.rateLimit?.rules).toEqual(
      (counted.rateLimit?.rules ?? []).filter((rule) => !rule.match.some((m) => m.key === 'user')),
    );
    expect(counted.authz?.userLimits).toBeUndefined();
  });

  it('ext-authz with no per-user limit at all: no userLimits in the AuthzPolicy', () => {
    const none = structuredClone(ingressYaml);
    delete none.limits.authenticated;
    none.routes = none.routes.filter((route: { id?: string }) => route.id !== 'booking-create');
    expect(policies(compile(none, 'ext-authz').resources).authz?.userLimits).toBeUndefined();
  });

  it('ext-authz in a mesh: the sidecar keeps its per-IP filter only, and its per-user route names the family', () => {
    const compiled = compile(meshYaml, 'ext-authz');
    const appointment = compiled.ir.mesh?.services.find((service) => service.name === 'appointment');
    if (!appointment) throw new Error('no appointment service');
    const sidecar = translateSidecar(compiled.ir, appointment);
    expect(filterNames(sidecar)).toEqual([`"name":"${httpFilterNames.rateLimitBeforeAuth}"`]);
    const routes = contexts(sidecar);
    expect(routes['appointment:get-appointments-prefix']?.[authzContextKeys.userLimits]).toBe('route');
    expect(routes['appointment:all']?.[authzContextKeys.userLimits]).toBeUndefined();
    expect(stages(sidecar)).toEqual([['appointment:all', [1]]]);
    expect(policies(compiled.resources).authz?.userLimits?.rules.map((rule) => rule.id)).toEqual([
      'route:appointment:get-appointments-prefix/user/60s',
    ]);
  });
});
