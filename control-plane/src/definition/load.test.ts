// Invalid definitions are refused with the exact path of every offending field, and
// definition files of every supported kind load (or fail) without throwing.
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CompileResult, compileDefinition, compileDefinitionFile } from './load';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are mutated freely
type Def = any;

function validDefinition(): Def {
  return {
    listeners: { http: { port: 8080 } },
    identity: {
      firebase: { projectId: 'demo-salon' },
      groupClaim: 'tier',
      groups: {
        basic: ['read:own_profile'],
        verified: { inherits: 'basic', adds: ['update:own_profile'] },
      },
    },
    policyServices: {
      extAuthz: { address: '127.0.0.1:9001' },
      rateLimit: { address: '127.0.0.1:9002' },
    },
    services: { customer: { endpoints: ['127.0.0.1:3001'] }, beta: { endpoints: ['127.0.0.1:3011'] } },
    limits: {
      authenticated: [{ per: 'user', limit: 300, window: '1m' }],
      unauthenticated: [{ per: 'ip', limit: 60, window: '1m' }],
    },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      { match: '/api/v1/auth/*', to: 'customer', auth: 'none', limits: [{ per: 'ip', limit: 5, window: '1m' }] },
    ],
  };
}

function errorPaths(result: CompileResult): string[] {
  return result.ok ? [] : result.errors.map((error) => error.path).sort();
}

const invalid: Array<{ name: string; change: (def: Def) => void; paths: string[] }> = [
  { name: 'an unknown top-level key', change: (d) => (d.listner = {}), paths: ['listner'] },
  {
    name: 'a misspelt service field',
    change: (d) => (d.services.customer.timout = '5s'),
    paths: ['services.customer.timout'],
  },
  { name: 'a missing listener port', change: (d) => delete d.listeners.http.port, paths: ['listeners.http.port'] },
  {
    name: 'a listener address that is not an IP',
    change: (d) => (d.listeners.http.address = 'localhost'),
    paths: ['listeners.http.address'],
  },
  {
    name: 'a permission nobody grants (typo)',
    change: (d) => (d.routes[0].require = ['read:own_profle']),
    paths: ['routes[0].require[0]'],
  },
  {
    name: 'a malformed permission',
    change: (d) => (d.routes[0].require = ['read-profile']),
    paths: ['routes[0].require[0]'],
  },
  { name: 'a route to an unknown service', change: (d) => (d.routes[0].to = 'custmer'), paths: ['routes[0].to'] },
  {
    name: 'permissions on an auth: none route',
    change: (d) => (d.routes[1].require = ['read:own_profile']),
    paths: ['routes[1].require'],
  },
  {
    name: 'permissions on an auth: optional route',
    change: (d) => {
      d.routes[0].auth = 'optional';
    },
    paths: ['routes[0].require'],
  },
  ...(
    [
      {
        name: 'an owner param on a route without a template',
        owner: { param: 'id' },
        paths: ['routes[0].owner.param'],
      },
      {
        name: 'an owner param that is not a variable of the template',
        template: '/api/v1/customers/{id}',
        owner: { param: 'customer' },
        paths: ['routes[0].owner.param'],
      },
      {
        name: 'an owner param spanning several segments',
        template: '/api/v1/customers/{id=**}',
        owner: { param: 'id' },
        paths: ['routes[0].owner.param'],
      },
      { name: 'an owner with both param and query', owner: { param: 'id', query: 'id' }, paths: ['routes[0].owner'] },
      { name: 'an owner with neither', owner: {}, paths: ['routes[0].owner'] },
      { name: 'an owner param in capitals', owner: { param: 'Id' }, paths: ['routes[0].owner.param'] },
      { name: 'an owner query with a space', owner: { query: 'customer id' }, paths: ['routes[0].owner.query'] },
      {
        name: 'an owner on an auth: optional route',
        owner: { query: 'c' },
        auth: 'optional',
        require: [],
        paths: ['routes[0].owner'],
      },
      {
        name: 'an owner without identity.customerId',
        owner: { query: 'c' },
        noCustomerId: true,
        paths: ['routes[0].owner'],
      },
      {
        name: 'a customer id claim that is a standard claim',
        owner: { query: 'c' },
        customerId: { claim: 'sub' },
        paths: ['identity.customerId.claim'],
      },
      {
        name: 'a customer id that is neither uid nor a claim',
        owner: { query: 'c' },
        customerId: 'email',
        paths: ['identity.customerId'],
      },
    ] as Array<{
      name: string;
      owner: object;
      template?: string;
      auth?: string;
      require?: string[];
      noCustomerId?: boolean;
      customerId?: unknown;
      paths: string[];
    }>
  ).map((c) => ({
    name: c.name,
    change: (d: Def) => {
      if (!c.noCustomerId) d.identity.customerId = c.customerId ?? { claim: 'customer_id' };
      if (c.template) d.routes[0].match = { methods: ['GET'], template: c.template };
      if (c.auth) d.routes[0].auth = c.auth;
      if (c.require) d.routes[0].require = c.require;
      d.routes[0].owner = c.owner;
    },
    paths: c.paths,
  })),
  { name: 'dry-run on an auth: none route', change: (d) => (d.routes[1].dryRun = true), paths: ['routes[1].dryRun'] },
  { name: 'dry-run that is not a boolean', change: (d) => (d.routes[0].dryRun = 'yes'), paths: ['routes[0].dryRun'] },
  {
    name: 'a gateway-wide dry-run that is not a boolean',
    change: (d) => (d.identity.dryRun = 1),
    paths: ['identity.dryRun'],
  },
  {
    name: 'an auth mode that does not exist',
    change: (d) => (d.routes[0].auth = 'maybe'),
    paths: ['routes[0].auth'],
  },
  {
    name: 'a per-user limit on an auth: none route',
    change: (d) => (d.routes[1].limits[0].per = 'user'),
    paths: ['routes[1].limits[0].per'],
  },
  {
    name: 'a per-ip authenticated limit',
    change: (d) => (d.limits.authenticated[0].per = 'ip'),
    paths: ['limits.authenticated[0].per'],
  },
  {
    name: 'a per-user unauthenticated limit',
    change: (d) => (d.limits.unauthenticated[0].per = 'user'),
    paths: ['limits.unauthenticated[0].per'],
  },
  {
    name: 'a window that is not whole seconds',
    change: (d) => (d.limits.authenticated[0].window = '1500ms'),
    paths: ['limits.authenticated[0].window'],
  },
  {
    name: 'a duration without unit',
    change: (d) => (d.policyServices.extAuthz.timeout = '500'),
    paths: ['policyServices.extAuthz.timeout'],
  },
  { name: 'a zero limit', change: (d) => (d.routes[1].limits[0].limit = 0), paths: ['routes[1].limits[0].limit'] },
  {
    name: 'a fractional limit',
    change: (d) => (d.limits.unauthenticated[0].limit = 1.5),
    paths: ['limits.unauthenticated[0].limit'],
  },
  {
    name: 'a burst on a fixed window',
    change: (d) => (d.limits.authenticated[0].burst = 50),
    paths: ['limits.authenticated[0].burst'],
  },
  {
    name: 'a burst on a sliding window',
    change: (d) => Object.assign(d.routes[1].limits[0], { algorithm: 'sliding', burst: 5 }),
    paths: ['routes[1].limits[0].burst'],
  },
  {
    name: 'a token bucket burst of 0',
    change: (d) => Object.assign(d.limits.unauthenticated[0], { algorithm: 'tokenBucket', burst: 0 }),
    paths: ['limits.unauthenticated[0].burst'],
  },
  {
    name: 'a fractional burst',
    change: (d) => Object.assign(d.routes[1].limits[0], { algorithm: 'tokenBucket', burst: 2.5 }),
    paths: ['routes[1].limits[0].burst'],
  },
  {
    name: 'an algorithm that does not exist',
    change: (d) => (d.limits.authenticated[0].algorithm = 'leakyBucket'),
    paths: ['limits.authenticated[0].algorithm'],
  },
  {
    name: 'a sliding window above 10,000 requests',
    change: (d) => Object.assign(d.limits.authenticated[0], { algorithm: 'sliding', limit: 10_001 }),
    paths: ['limits.authenticated[0].limit'],
  },
  {
    name: 'a per-limit shadow that is not a boolean',
    change: (d) => (d.routes[1].limits[0].shadow = 'yes'),
    paths: ['routes[1].limits[0].shadow'],
  },
  {
    name: 'a global shadow that is not a boolean',
    change: (d) => (d.limits.shadow = 1),
    paths: ['limits.shadow'],
  },
  {
    name: 'two windows of the same length in one family',
    change: (d) => d.limits.authenticated.push({ per: 'user', limit: 10, window: '60s' }),
    paths: ['limits.authenticated[1].window'],
  },
  {
    name: 'an endpoint without port',
    change: (d) => (d.services.customer.endpoints = ['127.0.0.1']),
    paths: ['services.customer.endpoints[0]'],
  },
  {
    name: 'an endpoint with a bad IP',
    change: (d) => (d.services.customer.endpoints = ['127.0.0.300:80']),
    paths: ['services.customer.endpoints[0]'],
  },
  {
    name: 'a service without endpoints',
    change: (d) => (d.services.customer.endpoints = []),
    paths: ['services.customer.endpoints'],
  },
  {
    name: 'an unknown failure mode',
    change: (d) => (d.policyServices.rateLimit.failureMode = 'open'),
    paths: ['policyServices.rateLimit.failureMode'],
  },
  {
    name: 'an unknown Redis failure mode',
    change: (d) => (d.policyServices.rateLimit.redisFailureMode = 'open'),
    paths: ['policyServices.rateLimit.redisFailureMode'],
  },
  {
    name: 'zero local replicas',
    change: (d) => (d.policyServices.rateLimit.localReplicas = 0),
    paths: ['policyServices.rateLimit.localReplicas'],
  },
  {
    name: 'a descriptor limit override that is not a boolean',
    change: (d) => (d.policyServices.rateLimit.descriptorLimitOverride = 'yes'),
    paths: ['policyServices.rateLimit.descriptorLimitOverride'],
  },
  {
    name: 'per-user limits counted by something else',
    change: (d) => (d.policyServices.rateLimit.perUserLimits = 'envoy'),
    paths: ['policyServices.rateLimit.perUserLimits'],
  },
  { name: 'a malformed match', change: (d) => (d.routes[0].match = 'FETCH /x'), paths: ['routes[0].match'] },
  {
    name: 'a zero gateway body limit',
    change: (d) => (d.edge = { maxRequestBodyBytes: 0 }),
    paths: ['edge.maxRequestBodyBytes'],
  },
  {
    name: 'a body limit given as text',
    change: (d) => (d.edge = { maxRequestBodyBytes: '1MiB' }),
    paths: ['edge.maxRequestBodyBytes'],
  },
  {
    name: 'a route body limit above 64 MiB',
    change: (d) => (d.routes[0].maxRequestBodyBytes = 128 * 1024 * 1024),
    paths: ['routes[0].maxRequestBodyBytes'],
  },
  {
    name: 'a "*" that is not a trailing "/*"',
    change: (d) => (d.routes[1].match = '/api/v1/auth*'),
    paths: ['routes[1].match'],
  },
  {
    name: 'a prefix rewrite without trailing slash',
    change: (d) => (d.routes[1].rewrite = '/auth'),
    paths: ['routes[1].rewrite'],
  },
  {
    name: 'duplicate explicit ids',
    change: (d) => {
      d.routes[0].id = 'x';
      d.routes[1].id = 'x';
    },
    paths: ['routes[1].id'],
  },
  {
    name: 'a second route with the same match',
    change: (d) => d.routes.push({ ...d.routes[0], id: 'again' }),
    paths: ['routes[2].match'],
  },
  {
    name: 'a route an earlier prefix route already takes',
    change: (d) => d.routes.push({ match: 'POST /api/v1/auth/login', to: 'customer', auth: 'none' }),
    paths: ['routes[2].match'],
  },
  { name: 'no routes', change: (d) => (d.routes = []), paths: ['routes'] },
  // Routes: the object match form and what a route does.
  {
    name: 'an object match with two path kinds',
    change: (d) => (d.routes[0].match = { path: '/a', prefix: '/b/' }),
    paths: ['routes[0].match'],
  },
  {
    name: 'an object match with an unknown method',
    change: (d) => (d.routes[0].match = { path: '/a', methods: ['FETCH'] }),
    paths: ['routes[0].match.methods[0]'],
  },
  {
    name: 'a regex with look-ahead (not RE2)',
    change: (d) => (d.routes[0].match = { regex: '^/a(?=b)' }),
    paths: ['routes[0].match.regex'],
  },
  {
    name: 'a regex that does not compile',
    change: (d) => (d.routes[0].match = { regex: '^/a(' }),
    paths: ['routes[0].match.regex'],
  },
  {
    name: 'a template with a bad variable',
    change: (d) => (d.routes[0].match = { template: '/a/{Id}' }),
    paths: ['routes[0].match.template'],
  },
  {
    name: 'a template with {x=**} before the end',
    change: (d) => (d.routes[0].match = { template: '/a/{rest=**}/b' }),
    paths: ['routes[0].match.template'],
  },
  {
    name: 'a header condition with two comparisons',
    change: (d) => (d.routes[0].match = { path: '/a', headers: [{ name: 'x-a', exact: '1', prefix: '1' }] }),
    paths: ['routes[0].match.headers[0]'],
  },
  {
    name: 'an upper-case header name',
    change: (d) => (d.routes[0].match = { path: '/a', headers: [{ name: 'X-A', present: true }] }),
    paths: ['routes[0].match.headers[0].name'],
  },
  {
    name: 'a query condition without comparison',
    change: (d) => (d.routes[0].match = { path: '/a', query: [{ name: 'q' }] }),
    paths: ['routes[0].match.query[0]'],
  },
  {
    name: 'a template rewrite naming a variable the match does not capture',
    change: (d) => {
      d.routes[0].match = { template: '/api/v1/appointments/{id}' };
      d.routes[0].rewrite = '/appointments/{uid}';
    },
    paths: ['routes[0].rewrite'],
  },
  {
    name: 'a {variable} rewrite on a match that is not a template',
    change: (d) => (d.routes[0].rewrite = '/profile/{id}'),
    paths: ['routes[0].rewrite'],
  },
  {
    name: 'a prefix rewrite on a regex match',
    change: (d) => (d.routes[0].match = { regex: '^/a/[0-9]+$' }),
    paths: ['routes[0].rewrite'],
  },
  {
    name: 'a regex rewrite without substitution',
    change: (d) => (d.routes[0].rewrite = { regex: '^/a' }),
    paths: ['routes[0].rewrite.substitution'],
  },
  {
    name: 'a route with both to and split',
    change: (d) =>
      (d.routes[0].split = [
        { to: 'customer', weight: 1 },
        { to: 'beta', weight: 1 },
      ]),
    paths: ['routes[0]'],
  },
  {
    name: 'a route with neither to, split, directResponse nor redirect',
    change: (d) => delete d.routes[0].to,
    paths: ['routes[0]'],
  },
  {
    name: 'a split with one service',
    change: (d) => {
      delete d.routes[0].to;
      d.routes[0].split = [{ to: 'customer', weight: 1 }];
    },
    paths: ['routes[0].split'],
  },
  {
    name: 'a split naming a service twice',
    change: (d) => {
      delete d.routes[0].to;
      d.routes[0].split = [
        { to: 'customer', weight: 1 },
        { to: 'customer', weight: 2 },
      ];
    },
    paths: ['routes[0].split[1].to'],
  },
  {
    name: 'a split with only zero weights',
    change: (d) => {
      delete d.routes[0].to;
      d.routes[0].split = [
        { to: 'customer', weight: 0 },
        { to: 'beta', weight: 0 },
      ];
    },
    paths: ['routes[0].split'],
  },
  {
    name: 'a split to an unknown service',
    change: (d) => {
      delete d.routes[0].to;
      d.routes[0].split = [
        { to: 'customer', weight: 9 },
        { to: 'custmer-beta', weight: 1 },
      ];
    },
    paths: ['routes[0].split[1].to'],
  },
  {
    name: 'a direct response with a bad status',
    change: (d) => {
      delete d.routes[0].to;
      delete d.routes[0].rewrite;
      d.routes[0].directResponse = { status: 99 };
    },
    paths: ['routes[0].directResponse.status'],
  },
  {
    name: 'a rewrite on a direct response',
    change: (d) => {
      delete d.routes[0].to;
      d.routes[0].directResponse = { status: 200 };
    },
    paths: ['routes[0].rewrite'],
  },
  {
    name: 'a redirect that changes nothing',
    change: (d) => {
      delete d.routes[1].to;
      d.routes[1].redirect = { status: 301 };
    },
    paths: ['routes[1].redirect'],
  },
  {
    name: 'a redirect with an unsupported status',
    change: (d) => {
      delete d.routes[1].to;
      d.routes[1].redirect = { path: '/x', status: 300 };
    },
    paths: ['routes[1].redirect.status'],
  },
  {
    name: 'a redirect prefixRewrite on an exact match',
    change: (d) => {
      delete d.routes[0].to;
      delete d.routes[0].rewrite;
      d.routes[0].redirect = { prefixRewrite: '/v2/' };
    },
    paths: ['routes[0].redirect.prefixRewrite'],
  },
  {
    name: 'route limits on a direct response',
    change: (d) => {
      delete d.routes[1].to;
      d.routes[1].directResponse = { status: 200 };
    },
    paths: ['routes[1].limits'],
  },
  {
    name: 'a route header change of an identity header',
    change: (d) => (d.routes[0].requestHeaders = { set: { 'x-sekisho-user-id': 'admin' } }),
    paths: ['routes[0].requestHeaders.set.x-sekisho-user-id'],
  },
  {
    name: 'a route removing host',
    change: (d) => (d.routes[0].requestHeaders = { remove: ['host'] }),
    paths: ['routes[0].requestHeaders.remove[0]'],
  },
  {
    name: 'an unknown retry condition',
    change: (d) => (d.routes[0].retries = { on: ['5xx', 'always'] }),
    paths: ['routes[0].retries.on[1]'],
  },
  {
    name: 'too many retries',
    change: (d) => (d.routes[0].retries = { count: 50 }),
    paths: ['routes[0].retries.count'],
  },
  {
    name: 'retriable status codes without the condition',
    change: (d) => (d.routes[0].retries = { on: ['5xx'], statusCodes: [409] }),
    paths: ['routes[0].retries.statusCodes'],
  },
  {
    name: 'a back-off whose max is below its base',
    change: (d) => (d.routes[0].retries = { backOff: { base: '1s', max: '100ms' } }),
    paths: ['routes[0].retries.backOff.max'],
  },
  {
    name: 'a route timeout without unit',
    change: (d) => (d.routes[0].timeout = '5'),
    paths: ['routes[0].timeout'],
  },
  {
    name: 'a bad idle timeout',
    change: (d) => (d.routes[0].idleTimeout = '0s'),
    paths: ['routes[0].idleTimeout'],
  },
  // Services.
  {
    name: 'an unknown upstream protocol',
    change: (d) => (d.services.customer.protocol = 'http3'),
    paths: ['services.customer.protocol'],
  },
  {
    name: 'upstream TLS without a CA',
    change: (d) => (d.services.customer.tls = { sni: 'customer.internal' }),
    paths: ['services.customer.tls.caFile'],
  },
  {
    name: 'upstream TLS with a certificate but no key',
    change: (d) => (d.services.customer.tls = { sni: 'c.internal', caFile: 'ca.pem', certFile: 'c.pem' }),
    paths: ['services.customer.tls'],
  },
  {
    name: 'upstream TLS to an IP endpoint without sni',
    change: (d) => (d.services.customer.tls = { caFile: 'ca.pem' }),
    paths: ['services.customer.tls.sni'],
  },
  {
    name: 'a health check with a bad interval',
    change: (d) => (d.services.customer.healthCheck = { path: '/health', interval: 'often' }),
    paths: ['services.customer.healthCheck.interval'],
  },
  {
    name: 'a health check with a zero threshold',
    change: (d) => (d.services.customer.healthCheck = { path: '/health', unhealthyThreshold: 0 }),
    paths: ['services.customer.healthCheck.unhealthyThreshold'],
  },
  {
    name: 'a health-check path without "/"',
    change: (d) => (d.services.customer.healthCheck = 'health'),
    paths: ['services.customer.healthCheck'],
  },
  {
    name: 'an outlier percentage above 100',
    change: (d) => (d.services.customer.outlierDetection = { maxEjectionPercent: 150 }),
    paths: ['services.customer.outlierDetection.maxEjectionPercent'],
  },
  {
    name: 'a misspelt outlier field',
    change: (d) => (d.services.customer.outlierDetection = { consecutive5XX: 3 }),
    paths: ['services.customer.outlierDetection.consecutive5XX'],
  },
  {
    name: 'a zero consecutive local-origin failure count',
    change: (d) => (d.services.customer.outlierDetection = { consecutiveLocalOriginFailure: 0 }),
    paths: ['services.customer.outlierDetection.consecutiveLocalOriginFailure'],
  },
  {
    name: 'a failure-percentage block without threshold',
    change: (d) => (d.services.customer.outlierDetection = { failurePercentage: { minimumHosts: 3 } }),
    paths: ['services.customer.outlierDetection.failurePercentage.threshold'],
  },
  {
    name: 'an enforcing percentage above 100',
    change: (d) => (d.services.customer.outlierDetection = { enforcing: { successRate: 101 } }),
    paths: ['services.customer.outlierDetection.enforcing.successRate'],
  },
  {
    name: 'a zero circuit-breaker threshold',
    change: (d) => (d.services.customer.circuitBreakers = { maxConnections: 0 }),
    paths: ['services.customer.circuitBreakers.maxConnections'],
  },
  {
    name: 'both maxRetries and a retry budget',
    change: (d) => (d.services.customer.circuitBreakers = { maxRetries: 3, retryBudget: { percent: 20 } }),
    paths: ['services.customer.circuitBreakers.retryBudget'],
  },
  {
    name: 'an unknown load-balancing policy',
    change: (d) => (d.services.customer.loadBalancing = { policy: 'fastest' }),
    paths: ['services.customer.loadBalancing.policy'],
  },
  {
    name: 'ring hash without a hash key',
    change: (d) => (d.services.customer.loadBalancing = { policy: 'ringHash' }),
    paths: ['services.customer.loadBalancing.hashOn'],
  },
  {
    name: 'a hash key on round robin',
    change: (d) => (d.services.customer.loadBalancing = { policy: 'roundRobin', hashOn: 'sourceIp' }),
    paths: ['services.customer.loadBalancing.hashOn'],
  },
  // Policy services.
  {
    name: 'a policy service with both address and addresses',
    change: (d) => (d.policyServices.extAuthz.addresses = ['127.0.0.1:9011']),
    paths: ['policyServices.extAuthz'],
  },
  {
    name: 'a policy service without any address',
    change: (d) => delete d.policyServices.rateLimit.address,
    paths: ['policyServices.rateLimit'],
  },
  {
    name: 'a policy-service replica with a bad address',
    change: (d) => {
      delete d.policyServices.extAuthz.address;
      d.policyServices.extAuthz.addresses = ['127.0.0.1:9001', '127.0.0.1'];
    },
    paths: ['policyServices.extAuthz.addresses[1]'],
  },
  {
    name: 'a policy-service replica named twice',
    change: (d) => {
      delete d.policyServices.extAuthz.address;
      d.policyServices.extAuthz.addresses = ['127.0.0.1:9001', '127.0.0.1:9001'];
    },
    paths: ['policyServices.extAuthz.addresses'],
  },
  {
    name: 'a policy-service health check with a bad timeout',
    change: (d) => (d.policyServices.extAuthz.healthCheck = { timeout: 'soon' }),
    paths: ['policyServices.extAuthz.healthCheck.timeout'],
  },
  {
    name: 'a policy-service health check set to true',
    change: (d) => (d.policyServices.extAuthz.healthCheck = true),
    paths: ['policyServices.extAuthz.healthCheck'],
  },
  {
    name: 'an unknown parent group',
    change: (d) => (d.identity.groups.verified.inherits = 'basik'),
    paths: ['identity.groups.verified.inherits'],
  },
  {
    name: 'an inheritance cycle',
    change: (d) => (d.identity.groups.basic = { inherits: ['verified'], adds: ['read:own_profile'] }),
    paths: ['identity.groups.verified.inherits'],
  },
  {
    name: 'a misspelt group field',
    change: (d) => (d.identity.groups.verified.add = []),
    paths: ['identity.groups.verified.add'],
  },
  {
    name: 'a group that is neither list nor object',
    change: (d) => (d.identity.groups.basic = 5),
    paths: ['identity.groups.basic'],
  },
  {
    name: 'a group name that is not snake_case',
    change: (d) => (d.identity.groups.Premium = []),
    paths: ['identity.groups.Premium'],
  },
  {
    name: 'an unknown default group',
    change: (d) => (d.identity.defaultGroup = 'gold'),
    paths: ['identity.defaultGroup'],
  },
  {
    name: 'a sign-in provider that is not a provider id',
    change: (d) => (d.identity.signInProviders = ['password', 'Google Sign-In']),
    paths: ['identity.signInProviders[1]'],
  },
  {
    name: 'an empty list of sign-in providers (nobody could sign in)',
    change: (d) => (d.identity.signInProviders = []),
    paths: ['identity.signInProviders'],
  },
  {
    name: 'a sign-in provider named twice',
    change: (d) => (d.identity.signInProviders = ['password', 'phone', 'password']),
    paths: ['identity.signInProviders[2]'],
  },
  {
    name: 'sign-in providers as a string',
    change: (d) => (d.identity.signInProviders = 'password'),
    paths: ['identity.signInProviders'],
  },
  {
    name: 'a tenant id with a dot',
    change: (d) => (d.identity.tenants = ['salon.a']),
    paths: ['identity.tenants[0]'],
  },
  {
    name: 'a tenant named twice',
    change: (d) => (d.identity.tenants = ['salon-a', 'salon-a']),
    paths: ['identity.tenants[1]'],
  },
  {
    name: 'several mistakes at once',
    change: (d) => {
      d.routes[0].to = 'nope';
      d.routes[0].require = ['read:nothing'];
      d.routes[1].limits[0].per = 'user';
    },
    paths: ['routes[0].require[0]', 'routes[0].to', 'routes[1].limits[0].per'],
  },
];

describe('compileDefinition', () => {
  it('accepts the valid base definition', () => {
    expect(errorPaths(compileDefinition(validDefinition()))).toEqual([]);
  });

  it.each(invalid)('refuses $name at $paths', ({ change, paths }) => {
    const definition = validDefinition();
    change(definition);
    const result = compileDefinition(definition);
    expect(result.ok).toBe(false);
    expect(errorPaths(result)).toEqual([...paths].sort());
  });

  it('names the problem in words a person can act on', () => {
    const definition = validDefinition();
    definition.routes[0].require = ['read:own_profle'];
    definition.services.customer.timout = '5s';
    const result = compileDefinition(definition);
    expect(result.ok ? [] : result.errors).toEqual([
      { path: 'services.customer.timout', message: expect.stringContaining('unknown field "timout"') },
    ]);
    delete definition.services.customer.timout;
    const second = compileDefinition(definition);
    expect(second.ok ? [] : second.errors).toEqual([
      { path: 'routes[0].require[0]', message: expect.stringContaining('"read:own_profle" is granted by no group') },
    ]);
  });

  it('refuses something that is not an object at the root', () => {
    const result = compileDefinition(null);
    expect(result.ok ? [] : result.errors).toEqual([{ path: '', message: 'must be an object, got null' }]);
  });
});

describe('compileDefinitionFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-definition-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const write = async (name: string, content: string) => {
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  };

  it('loads YAML, JSON and a module default export to the same resources', async () => {
    const definition = validDefinition();
    const results = await Promise.all([
      compileDefinitionFile(await write('g.yaml', `# comment\n${JSON.stringify(definition)}`)),
      compileDefinitionFile(await write('g.json', JSON.stringify(definition))),
      compileDefinitionFile(await write('g.mjs', `export default ${JSON.stringify(definition)};`)),
      compileDefinitionFile(
        await write('g.ts', `const d: unknown = ${JSON.stringify(definition)};\nexport default d;`),
      ),
    ]);
    const hex = results.map((result) => {
      if (!result.ok) throw new Error(JSON.stringify(result.errors));
      return [...result.resources.values()].flat().map((resource) => resource.resource.value.toString('hex'));
    });
    for (const other of hex.slice(1)) expect(other).toEqual(hex[0]);
  });

  it('imports a changed module again instead of serving the cached one', async () => {
    const definition = validDefinition();
    const path = await write('reload.ts', `export default ${JSON.stringify(definition)};`);
    const first = await compileDefinitionFile(path);
    definition.listeners.http.port = 9090;
    await writeFile(path, `export default ${JSON.stringify(definition)};`);
    // Same size, so only the modification time tells the versions apart.
    await utimes(path, new Date(), new Date(Date.now() + 5_000));
    const second = await compileDefinitionFile(path);
    expect(first.ok && first.ir.listener.port).toBe(8080);
    expect(second.ok && second.ir.listener.port).toBe(9090);
  });

  const failures: Array<{ name: string; file: string; content?: string; message: RegExp }> = [
    { name: 'a missing file', file: 'absent.yaml', message: /absent\.yaml: ENOENT/ },
    { name: 'broken YAML', file: 'broken.yaml', content: 'routes: [unclosed', message: /broken\.yaml: / },
    {
      name: 'a module without default export',
      file: 'nodefault.mjs',
      content: 'export const x = 1;',
      message: /has no default export/,
    },
    {
      name: 'a module that throws',
      file: 'throws.mjs',
      content: "throw new Error('boom');",
      message: /throws\.mjs: boom/,
    },
    { name: 'an unsupported extension', file: 'gateway.toml', content: '', message: /unsupported file type "\.toml"/ },
  ];

  it.each(failures)(
    'reports $name as a FieldError with path "" instead of throwing',
    async ({ file, content, message }) => {
      const path = content === undefined ? join(dir, file) : await write(file, content);
      const result = await compileDefinitionFile(path);
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.errors).toHaveLength(1);
      expect(result.errors[0]?.path).toBe('');
      expect(result.errors[0]?.message).toMatch(message);
    },
  );

  it('reports schema errors of a file with their field paths', async () => {
    const definition = validDefinition();
    definition.routes[0].to = 'nobody';
    const result = await compileDefinitionFile(await write('bad-ref.json', JSON.stringify(definition)));
    expect(errorPaths(result)).toEqual(['routes[0].to']);
  });
});
