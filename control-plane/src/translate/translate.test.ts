// Properties of translate() that hold for every definition: complete, sorted, decodable,
// deterministic, and with rate-limit actions that mirror the rate-limit rules exactly.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import type { RateLimit_Action } from '@sekisho/proto/envoy/config/route/v3/route_components';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { descriptorKeys, identityHeaders } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileDefinition, compileDefinitionFile } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { encode, type MessageCodec, renderAny, unpack } from './any';

const examples = resolve(import.meta.dirname, '../../examples');
const salonYaml = parse(readFileSync(resolve(examples, 'salon.gateway.yaml'), 'utf8'));

/** The example; `twoCalls`: with the default perUserLimits (the example counts them in ext-authz). */
function compileSalon(opts: { twoCalls?: boolean } = {}) {
  const definition = structuredClone(salonYaml);
  if (opts.twoCalls) delete definition.policyServices.rateLimit.perUserLimits;
  const compiled = compileDefinition(definition, { baseDir: examples });
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
  return compiled;
}

// biome-ignore lint/suspicious/noExplicitAny: codecs of different message types
const codecs: Record<string, MessageCodec<any>> = {
  [typeUrls.cluster]: Cluster,
  [typeUrls.endpoint]: ClusterLoadAssignment,
  [typeUrls.secret]: Secret,
  [typeUrls.listener]: Listener,
  [typeUrls.route]: RouteConfiguration,
  [typeUrls.authzPolicy]: AuthzPolicy,
  [typeUrls.rateLimitPolicy]: RateLimitPolicy,
};

describe('translate', () => {
  it('serves every type URL, resources sorted by name, each Any typed with its type URL', () => {
    const { resources } = compileSalon();
    expect([...resources.keys()].sort()).toEqual(Object.values(typeUrls).sort());
    for (const [typeUrl, list] of resources) {
      const names = list.map((resource) => resource.name);
      expect(names).toEqual([...names].sort());
      for (const resource of list) expect(resource.resource.typeUrl).toBe(typeUrl);
    }
    expect(resources.get(typeUrls.cluster)?.map((resource) => resource.name)).toEqual([
      'sekisho_ext_authz',
      'sekisho_ratelimit',
      'sekisho_threat_detector',
      'svc_appointment',
      'svc_customer',
      'svc_notification',
    ]);
  });

  it('packs bytes that decode and re-encode to the same bytes', () => {
    const { resources } = compileSalon();
    for (const [typeUrl, list] of resources) {
      const codec = codecs[typeUrl];
      if (codec === undefined) throw new Error(`no codec for ${typeUrl}`);
      for (const resource of list) {
        const bytes = resource.resource.value;
        expect(bytes.length).toBeGreaterThan(0);
        expect(encode(codec, unpack(codec, resource.resource)).equals(bytes)).toBe(true);
        expect(() => renderAny(resource.resource)).not.toThrow();
      }
    }
  });

  it('gives byte-identical resources for the same input', () => {
    const first = compileSalon().resources;
    const second = compileSalon().resources;
    for (const [typeUrl, list] of first) {
      const other = second.get(typeUrl) ?? [];
      expect(other.map((resource) => resource.name)).toEqual(list.map((resource) => resource.name));
      list.forEach((resource, index) => {
        expect(other[index]?.resource.value.equals(resource.resource.value)).toBe(true);
      });
    }
  });

  it('compiles the TS and the YAML example to the same bytes', async () => {
    const fromTs = await compileDefinitionFile(resolve(examples, 'salon.gateway.ts'));
    const fromYaml = await compileDefinitionFile(resolve(examples, 'salon.gateway.yaml'));
    if (!fromTs.ok || !fromYaml.ok) throw new Error('examples do not compile');
    expect(fromTs.definition).toEqual(fromYaml.definition);
    for (const [typeUrl, list] of fromYaml.resources) {
      expect(fromTs.resources.get(typeUrl)?.map((resource) => resource.resource.value.toString('hex'))).toEqual(
        list.map((resource) => resource.resource.value.toString('hex')),
      );
    }
  });

  it("mirrors every route's rate-limit actions in exactly one family of rate-limit rules", () => {
    const { resources, ir } = compileSalon({ twoCalls: true });
    const [routeResource] = resources.get(typeUrls.route) ?? [];
    const [policyResource] = resources.get(typeUrls.rateLimitPolicy) ?? [];
    if (!routeResource || !policyResource) throw new Error('missing resources');
    const routeConfig = unpack(RouteConfiguration, routeResource.resource);
    const policy = unpack(RateLimitPolicy, policyResource.resource);
    const ruleShapes = new Set(policy.rules.map((rule) => JSON.stringify(rule.match)));

    // The declared routes: not the preflight routes (cors.ts: the CORS filter answers them
    // first) nor the gateway's own direct responses (413 on Content-Length, 405).
    const routes = (routeConfig.virtualHosts[0]?.routes ?? []).filter(
      (route) =>
        route.route !== undefined &&
        !route.match?.headers.some((header) => header.name === 'access-control-request-method'),
    );
    expect(routes.map((route) => route.name)).toEqual(ir.routes.map((route) => route.id));
    for (const route of routes) {
      const descriptors = route.route?.rateLimits ?? [];
      // Global authenticated + unauthenticated (and the failed-token count of the latter where
      // tokens are verified), plus one per (route, per) with own limits.
      const routeIR = ir.routes.find((candidate) => candidate.id === route.name);
      const own = routeIR?.limits ?? [];
      const failedTokens = routeIR?.auth === 'required' ? 1 : 0;
      expect(descriptors).toHaveLength(2 + failedTokens + new Set(own.map((limit) => limit.per)).size);
      for (const descriptor of descriptors) {
        expect(ruleShapes).toContain(JSON.stringify(descriptor.actions.map(expectedEntry)));
      }
    }
  });

  it('gives the rate-limit service one rule per window with the reference limits', () => {
    const rules = (resources: ResourcesByType) => {
      const [policyResource] = resources.get(typeUrls.rateLimitPolicy) ?? [];
      const [authzResource] = resources.get(typeUrls.authzPolicy) ?? [];
      if (!policyResource || !authzResource) throw new Error('missing policy');
      const policy = unpack(RateLimitPolicy, policyResource.resource);
      expect(policy.domain).toBe('sekisho');
      const shape = (list: RateLimitPolicy['rules']) =>
        list.map((rule) => [rule.id, rule.requestsPerWindow, rule.windowSeconds, rule.blockSeconds]);
      const inExtAuthz = unpack(AuthzPolicy, authzResource.resource).userLimits?.rules ?? [];
      return { service: shape(policy.rules), extAuthz: shape(inExtAuthz) };
    };
    const perUser = [
      ['authenticated/user/60s', 300, 60, 0],
      ['authenticated/user/3600s', 1000, 3600, 0],
      ['route:post-api-v1-appointments/user/60s', 10, 60, 0],
      ['route:post-api-v1-messages/user/60s', 30, 60, 0],
    ];
    const perIp = [
      ['unauthenticated/ip/60s', 60, 60, 0],
      ['unauthenticated/ip/3600s', 200, 3600, 0],
      ['route:api-v1-auth-prefix/ip/60s', 5, 60, 900],
    ];
    // Two calls (the default): the service has every rule, in the descriptors' order.
    expect(rules(compileSalon({ twoCalls: true }).resources)).toEqual({
      service: [perUser[0], perUser[1], perIp[0], perIp[1], perUser[2], perUser[3], perIp[2]],
      extAuthz: [],
    });
    // The example (perUserLimits: ext-authz): the per-user ones are ext-authz's.
    expect(rules(compileSalon().resources)).toEqual({ service: perIp, extAuthz: perUser });
  });

  it("gives ext-authz each route's id, auth mode, required permissions and the header limits", () => {
    const { resources } = compileSalon();
    const [routeResource] = resources.get(typeUrls.route) ?? [];
    if (!routeResource) throw new Error('missing routes');
    const routes = unpack(RouteConfiguration, routeResource.resource).virtualHosts[0]?.routes ?? [];
    const extensions = Object.fromEntries(
      routes.map((route) => {
        const perRoute = route.typedPerFilterConfig['envoy.filters.http.ext_authz'];
        if (!perRoute) throw new Error(`route ${route.name} has no ext_authz config`);
        return [route.name, unpack(ExtAuthzPerRoute, perRoute).checkSettings?.contextExtensions];
      }),
    );
    expect(extensions['get-api-v1-customer-profile']).toEqual({
      'sekisho.route_id': 'get-api-v1-customer-profile',
      'sekisho.auth': 'required',
      'sekisho.permissions': 'read:own_profile',
      'sekisho.max_request_headers': '80',
      'sekisho.max_request_header_bytes': '32768',
      // The example counts the per-user limits in ext-authz (perUserLimits): this route has the global ones.
      'sekisho.user_limits': 'authenticated',
    });
    expect(extensions['api-v1-auth-prefix']).toEqual({
      'sekisho.route_id': 'api-v1-auth-prefix',
      'sekisho.auth': 'none',
      'sekisho.permissions': '',
      'sekisho.max_request_headers': '80',
      'sekisho.max_request_header_bytes': '32768',
    });
  });

  it('gives ext-authz the groups with inheritance resolved', () => {
    const { resources } = compileSalon();
    const [authzResource] = resources.get(typeUrls.authzPolicy) ?? [];
    if (!authzResource) throw new Error('missing policy');
    const policy = unpack(AuthzPolicy, authzResource.resource);
    expect(policy.firebase?.projectId).toBe('demo-salon');
    expect(policy.groupClaim).toBe('tier');
    expect(policy.defaultGroup).toBe('basic_customer');
    expect(Object.keys(policy.groups)).toEqual(['basic_customer', 'premium_customer', 'verified_customer']);
    expect(policy.groups.premium_customer?.permissions).toHaveLength(12);
    expect(policy.groups.verified_customer?.permissions).toEqual([
      'read:own_profile',
      'read:own_appointments',
      'read:own_history',
      'read:own_messages',
      'read:own_points',
      'update:own_profile',
      'create:appointments',
      'update:own_appointments',
      'send:messages',
    ]);
  });
});

/** The descriptor entry an Envoy action produces, as the rate-limit rules write it. */
function expectedEntry(action: RateLimit_Action): { key: string; value: string } {
  if (action.genericKey) return { key: action.genericKey.descriptorKey, value: action.genericKey.descriptorValue };
  if (action.requestHeaders) {
    expect(action.requestHeaders.headerName).toBe(identityHeaders.userId);
    return { key: action.requestHeaders.descriptorKey, value: '' };
  }
  if (action.headerValueMatch) {
    expect(action.headerValueMatch.expectMatch).toBe(false);
    return { key: action.headerValueMatch.descriptorKey, value: action.headerValueMatch.descriptorValue };
  }
  if (action.remoteAddress) return { key: descriptorKeys.remoteAddress, value: '' };
  // The failed-token count: the anonymous entry, from ext-authz's dynamic metadata ("true").
  if (action.metadata) return { key: action.metadata.descriptorKey, value: 'true' };
  throw new Error(`unexpected action ${JSON.stringify(action)}`);
}
