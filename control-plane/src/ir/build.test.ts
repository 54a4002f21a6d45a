// The IR normalises the definition: default ids, path kinds, discovery, resolved groups,
// durations in ms and limits in seconds.
import { describe, expect, it } from 'vitest';
import { type GatewayDefinitionInput, gatewayDefinitionSchema } from '../definition/schema';
import { buildIR } from './build';
import { resolveGroups } from './groups';
import { defaultRouteId, parseMatch } from './match';
import type { GatewayIR } from './types';

function ir(overrides: Partial<GatewayDefinitionInput> = {}): GatewayIR {
  const definition = gatewayDefinitionSchema.parse({
    listeners: { http: { port: 8080 } },
    identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { basic: ['read:own_profile'] } },
    policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
    services: { customer: { endpoints: ['127.0.0.1:3001'] } },
    routes: [{ match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] }],
    ...overrides,
  } satisfies GatewayDefinitionInput);
  const built = buildIR(definition);
  if (!built.ok) throw new Error(JSON.stringify(built.errors));
  return built.ir;
}

describe('route matches', () => {
  it.each([
    ['GET /api/v1/customer/profile', 'GET', 'exact', '/api/v1/customer/profile', 'get-api-v1-customer-profile'],
    ['POST /api/v1/appointments', 'POST', 'exact', '/api/v1/appointments', 'post-api-v1-appointments'],
    ['/api/v1/auth/*', undefined, 'prefix', '/api/v1/auth/', 'api-v1-auth-prefix'],
    ['DELETE /api/v1/appointments/*', 'DELETE', 'prefix', '/api/v1/appointments/', 'delete-api-v1-appointments-prefix'],
    ['/api/v1/auth', undefined, 'exact', '/api/v1/auth', 'api-v1-auth'],
    ['/*', undefined, 'prefix', '/', 'prefix'],
    ['/', undefined, 'exact', '/', 'root'],
  ])('%s → method %s, %s %s, id %s', (text, method, kind, value, id) => {
    const parsed = parseMatch(text);
    expect(parsed).toEqual({
      methods: method === undefined ? [] : [method],
      path: { kind, value },
      headers: [],
      query: [],
    });
    expect(defaultRouteId(parsed)).toBe(id);
  });
});

describe('group inheritance', () => {
  it('puts parents first, in the order named, without duplicates', () => {
    const { groups, errors } = resolveGroups({
      reader: ['read:a', 'read:b'],
      writer: ['write:a'],
      editor: { inherits: ['writer', 'reader'], adds: ['read:a', 'edit:a'] },
      chief: { inherits: 'editor', adds: ['approve:a'] },
    });
    expect(errors).toEqual([]);
    expect(groups).toEqual([
      { name: 'chief', permissions: ['write:a', 'read:a', 'read:b', 'edit:a', 'approve:a'] },
      { name: 'editor', permissions: ['write:a', 'read:a', 'read:b', 'edit:a'] },
      { name: 'reader', permissions: ['read:a', 'read:b'] },
      { name: 'writer', permissions: ['write:a'] },
    ]);
  });

  it('reports a cycle through several groups once, naming its members', () => {
    const { errors } = resolveGroups({
      a: { inherits: 'c', adds: [] },
      b: { inherits: 'a', adds: [] },
      c: { inherits: 'b', adds: [] },
    });
    expect(errors).toEqual([{ path: 'identity.groups.b.inherits', message: 'inheritance cycle: a → c → b → a' }]);
  });
});

describe('clusters', () => {
  it.each([
    { endpoints: ['127.0.0.1:3001'], discovery: 'eds', hosts: ['127.0.0.1'] },
    { endpoints: ['localhost:3001'], discovery: 'eds', hosts: ['127.0.0.1'] },
    { endpoints: ['10.0.0.1:3001', 'localhost:3002'], discovery: 'eds', hosts: ['10.0.0.1', '127.0.0.1'] },
    { endpoints: ['customer-service:3001'], discovery: 'dns', hosts: ['customer-service'] },
    { endpoints: ['10.0.0.1:3001', 'customer.svc:3001'], discovery: 'dns', hosts: ['10.0.0.1', 'customer.svc'] },
  ])('$endpoints → $discovery', ({ endpoints, discovery, hosts }) => {
    const cluster = ir({ services: { customer: { endpoints } } }).clusters.find((c) => c.name === 'svc_customer');
    expect(cluster?.discovery).toBe(discovery);
    expect(cluster?.endpoints.map((endpoint) => endpoint.host)).toEqual(hosts);
  });

  it('adds the two policy-service clusters over HTTP/2, all sorted by name', () => {
    const clusters = ir().clusters;
    expect(clusters.map((cluster) => [cluster.name, cluster.protocol])).toEqual([
      ['sekisho_ext_authz', 'http2'],
      ['sekisho_ratelimit', 'http2'],
      ['svc_customer', 'http1'],
    ]);
  });
});

describe('durations and limits', () => {
  it('applies the defaults: 15s route timeout, 1s connect timeout, 500ms/100ms policy timeouts', () => {
    const built = ir();
    expect(built.routes[0]?.action).toMatchObject({ kind: 'forward', timeoutMs: 15_000 });
    expect(built.clusters.find((c) => c.name === 'svc_customer')?.connectTimeoutMs).toBe(1000);
    expect(built.extAuthz.timeoutMs).toBe(500);
    expect(built.rateLimit).toEqual({
      clusterName: 'sekisho_ratelimit',
      timeoutMs: 100,
      failureMode: 'allow',
      descriptorLimitOverride: false,
      perUserLimits: 'rate-limit-service',
    });
    expect(built.listener).toMatchObject({ address: '0.0.0.0' });
    expect(built.clientAddress.trustedProxies).toEqual([]);
    expect(built.requestHeaders).toMatchObject({ maxCount: 80, maxSizeKb: 32 });
  });

  it('counts windows and block times in seconds', () => {
    const built = ir({
      limits: { unauthenticated: [{ per: 'ip', limit: 200, window: '1h' }] },
      routes: [
        {
          match: '/api/v1/auth/*',
          to: 'customer',
          auth: 'none',
          limits: [{ per: 'ip', limit: 5, window: '60s', blockFor: '15m' }],
        },
      ],
    });
    const fixed = { algorithm: 'fixed', burst: 0, shadow: false };
    expect(built.limits).toEqual({
      authenticated: [],
      unauthenticated: [{ per: 'ip', requestsPerWindow: 200, windowSeconds: 3600, blockSeconds: 0, ...fixed }],
    });
    expect(built.routes[0]?.limits).toEqual([
      { per: 'ip', requestsPerWindow: 5, windowSeconds: 60, blockSeconds: 900, ...fixed },
    ]);
  });

  it('keeps the algorithm, defaults a token bucket burst to the limit, and resolves shadow mode', () => {
    const built = ir({
      limits: {
        shadow: true,
        authenticated: [
          { per: 'user', limit: 300, window: '1m', algorithm: 'sliding' },
          { per: 'user', limit: 1000, window: '1h', shadow: false },
        ],
        unauthenticated: [{ per: 'ip', limit: 100, window: '1s', algorithm: 'tokenBucket', burst: 200 }],
      },
      routes: [
        {
          match: '/api/v1/auth/*',
          to: 'customer',
          auth: 'none',
          limits: [{ per: 'ip', limit: 5, window: '1m', algorithm: 'tokenBucket', blockFor: '15m' }],
        },
      ],
    });
    const pick = (l: { algorithm: string; burst: number; shadow: boolean }) => [l.algorithm, l.burst, l.shadow];
    expect(built.limits.authenticated.map(pick)).toEqual([
      ['sliding', 0, true],
      ['fixed', 0, false],
    ]);
    expect(built.limits.unauthenticated.map(pick)).toEqual([['tokenBucket', 200, true]]);
    expect(built.routes[0]?.limits.map(pick)).toEqual([['tokenBucket', 5, true]]);
  });
});

describe('new route kinds: ids and shadowing', () => {
  const route = (match: unknown) => ({ match, to: 'customer', require: ['read:own_profile'] });
  const compile = (routes: unknown[]) => {
    const parsed = gatewayDefinitionSchema.safeParse({
      listeners: { http: { port: 8080 } },
      identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { basic: ['read:own_profile'] } },
      policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
      services: { customer: { endpoints: ['127.0.0.1:3001'] } },
      routes,
    });
    if (!parsed.success) throw new Error(JSON.stringify(parsed.error.issues));
    return buildIR(parsed.data);
  };

  it.each([
    [{ methods: ['GET', 'HEAD'], path: '/a' }, 'get-head-a'],
    [{ template: '/api/v1/appointments/{id}' }, 'api-v1-appointments-id-template'],
    [{ regex: '^/a/[0-9]+$' }, `a-0-9-regex-${'[hash]'}`],
    [{ path: '/a', headers: [{ name: 'x-client', exact: 'ios' }] }, 'a-[hash]'],
  ])('%j → a stable id like %s', (match, pattern) => {
    const built = compile([route(match)]);
    if (!built.ok) throw new Error(JSON.stringify(built.errors));
    const id = built.ir.routes[0]?.id ?? '';
    expect(id).toMatch(new RegExp(`^${pattern.replace(/[[\]]/g, '').replace('hash', '[0-9a-f]{8}')}$`));
    const again = compile([route(match)]);
    expect(again.ok && again.ir.routes[0]?.id).toBe(id);
  });

  it('gives two routes that differ only in a header condition different ids', () => {
    const built = compile([
      route({ path: '/a', headers: [{ name: 'x-client', exact: 'ios' }] }),
      route({ path: '/a', headers: [{ name: 'x-client', exact: 'android' }] }),
    ]);
    expect(built.ok).toBe(true);
  });

  it.each([
    ['a prefix before a template under it', '/api/v1/*', { template: '/api/v1/appointments/{id}' }],
    ['the same template twice', { template: '/a/{id}' }, { template: '/a/{id}' }],
    ['the same regex twice', { regex: '^/a$' }, { regex: '^/a$' }],
    ['any method before several methods', '/a', { methods: ['GET', 'POST'], path: '/a' }],
    [
      'fewer conditions first',
      { path: '/a', query: [{ name: 'q', present: true }] },
      {
        path: '/a',
        query: [{ name: 'q', present: true }],
        headers: [{ name: 'x-a', exact: '1' }],
      },
    ],
  ])('refuses a route made dead by an earlier one: %s', (_name, earlier, later) => {
    const built = compile([route(earlier), route(later)]);
    expect(built.ok ? [] : built.errors.map((error) => error.path)).toEqual(['routes[1].match']);
  });

  it.each([
    ['a template before a prefix', { template: '/a/{id}' }, '/a/*'],
    ['a regex before an exact path it matches', { regex: '^/a/.*$' }, '/a/b'],
    [
      'a header condition before the same path without it',
      { path: '/a', headers: [{ name: 'x', present: true }] },
      '/a',
    ],
    ['GET before GET and POST', 'GET /a', { methods: ['GET', 'POST'], path: '/a' }],
    ['a prefix before a template that leaves it', '/api/v1/a/*', { template: '/api/v1/{x}/b' }],
  ])('does not claim shadowing it cannot prove: %s', (_name, earlier, later) => {
    expect(compile([route(earlier), route(later)]).ok).toBe(true);
  });
});
