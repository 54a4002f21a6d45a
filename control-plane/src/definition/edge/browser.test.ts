// Invalid browser settings (edge.cors, edge.securityHeaders, edge.csrf, edge.compression and
// a route's cors / securityHeaders) are refused with the path of the offending field.
import { describe, expect, it } from 'vitest';
import { type CompileResult, compileDefinition } from '../load';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are mutated freely
type Def = any;

function validDefinition(): Def {
  return {
    listeners: { http: { port: 8080 } },
    identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { member: ['read:own_profile'] } },
    policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
    services: { customer: { endpoints: ['127.0.0.1:3001'] } },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] },
      { match: '/api/v1/auth/*', to: 'customer', auth: 'none' },
    ],
    edge: { cors: { allowOrigins: ['https://app.example', 'https://*.example.com'] } },
  };
}

function errors(result: CompileResult) {
  return result.ok ? [] : result.errors;
}

const invalid: Array<{ name: string; change: (def: Def) => void; path: string; message?: RegExp }> = [
  {
    name: 'an origin with a path',
    change: (d) => (d.edge.cors.allowOrigins = ['https://app.example/']),
    path: 'edge.cors.allowOrigins[0]',
    message: /no path, no trailing "\/"/,
  },
  {
    name: 'an origin without a scheme',
    change: (d) => (d.edge.cors.allowOrigins = ['app.example']),
    path: 'edge.cors.allowOrigins[0]',
  },
  {
    name: 'an upper-case origin',
    change: (d) => (d.edge.cors.allowOrigins = ['https://App.example']),
    path: 'edge.cors.allowOrigins[0]',
  },
  { name: 'a bare "*" origin', change: (d) => (d.edge.cors.allowOrigins = ['*']), path: 'edge.cors.allowOrigins[0]' },
  {
    name: 'the "null" origin',
    change: (d) => (d.edge.cors.allowOrigins = ['null']),
    path: 'edge.cors.allowOrigins[0]',
  },
  {
    name: 'a wildcard that is not the first label',
    change: (d) => (d.edge.cors.allowOrigins = ['https://app.*.example']),
    path: 'edge.cors.allowOrigins[0]',
  },
  {
    name: 'an origin with the default port (browsers never send it)',
    change: (d) => (d.edge.cors.allowOrigins = ['https://app.example:443']),
    path: 'edge.cors.allowOrigins[0]',
    message: /without ":443"/,
  },
  { name: 'no origins', change: (d) => (d.edge.cors.allowOrigins = []), path: 'edge.cors.allowOrigins' },
  {
    name: 'an unknown method',
    change: (d) => (d.edge.cors.allowMethods = ['FETCH']),
    path: 'edge.cors.allowMethods[0]',
  },
  {
    name: 'a header name with a space',
    change: (d) => (d.edge.cors.allowHeaders = ['content type']),
    path: 'edge.cors.allowHeaders[0]',
  },
  { name: 'a max-age in milliseconds', change: (d) => (d.edge.cors.maxAge = '1500ms'), path: 'edge.cors.maxAge' },
  { name: 'a misspelt cors field', change: (d) => (d.edge.cors.allowOrigin = []), path: 'edge.cors.allowOrigin' },
  {
    name: 'a route override without origins while edge.cors is absent',
    change: (d) => {
      delete d.edge.cors;
      d.routes[0].cors = { allowCredentials: true };
    },
    path: 'routes[0].cors.allowOrigins',
    message: /edge\.cors is not set/,
  },
  { name: 'a route cors of true', change: (d) => (d.routes[0].cors = true), path: 'routes[0].cors' },
  {
    name: 'a header value with a line break',
    change: (d) => (d.edge.securityHeaders = { referrerPolicy: 'no-referrer\r\nx-evil: 1' }),
    path: 'edge.securityHeaders.referrerPolicy',
  },
  {
    name: 'a CSP source with a ";" (it would start another directive)',
    change: (d) => (d.edge.securityHeaders = { contentSecurityPolicy: { 'script-src': ["'self'; object-src *"] } }),
    path: 'edge.securityHeaders.contentSecurityPolicy.script-src[0]',
  },
  {
    name: 'a CSP directive in upper case',
    change: (d) => (d.edge.securityHeaders = { contentSecurityPolicy: { 'Script-Src': ["'self'"] } }),
    path: 'edge.securityHeaders.contentSecurityPolicy.Script-Src',
  },
  {
    name: 'HSTS preload without includeSubDomains',
    change: (d) => (d.edge.securityHeaders = { strictTransportSecurity: { preload: true, includeSubDomains: false } }),
    path: 'edge.securityHeaders.strictTransportSecurity.preload',
  },
  {
    name: 'HSTS on a route (it is per host)',
    change: (d) => (d.routes[0].securityHeaders = { strictTransportSecurity: false }),
    path: 'routes[0].securityHeaders.strictTransportSecurity',
  },
  {
    name: 'a misspelt security header',
    change: (d) => (d.edge.securityHeaders = { xFrameOption: 'DENY' }),
    path: 'edge.securityHeaders.xFrameOption',
  },
  {
    name: 'a CSRF origin with a path',
    change: (d) => (d.edge.csrf = { additionalOrigins: ['https://partner.example/app'] }),
    path: 'edge.csrf.additionalOrigins[0]',
  },
  {
    name: 'a negative compression size',
    change: (d) => (d.edge.compression = { minLength: -1 }),
    path: 'edge.compression.minLength',
  },
  {
    name: 'an unknown compression algorithm',
    change: (d) => (d.edge.compression = { algorithms: ['zstd'] }),
    path: 'edge.compression.algorithms[0]',
  },
  {
    name: 'an algorithm listed twice',
    change: (d) => (d.edge.compression = { algorithms: ['br', 'br'] }),
    path: 'edge.compression.algorithms',
  },
];

describe('browser settings in the gateway definition', () => {
  it('accepts the valid definition, and one without any edge section', () => {
    expect(errors(compileDefinition(validDefinition()))).toEqual([]);
    const bare = validDefinition();
    delete bare.edge;
    expect(errors(compileDefinition(bare))).toEqual([]);
  });

  it.each(invalid)('refuses $name, naming $path', ({ change, path, message }) => {
    const definition = validDefinition();
    change(definition);
    const found = errors(compileDefinition(definition));
    expect(found.map((error) => error.path)).toEqual([path]);
    if (message) expect(found[0]?.message).toMatch(message);
  });
});
