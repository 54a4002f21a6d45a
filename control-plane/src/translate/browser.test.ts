// The browser-facing translation: origin patterns that match only what they say, preflight
// routes that mirror the routes' order, HSTS only on TLS listeners, and the filter order that
// answers preflights and refuses forged POSTs before anything asks ext-authz.

import { describe, expect, it } from 'vitest';
import { compileDefinition } from '../definition/load';
import { parseOrigin } from '../ir/browser';
import type { GatewayIR } from '../ir/types';
import { type ClientAddressChain, clientAddressChains } from './client-address';
import { originRegex, preflightRoutes } from './cors';
import { httpFilters } from './http-filters';
import { translateRoutes } from './routes';
import { securityResponseHeaders } from './security-headers';

function compile(edge: unknown, routes?: unknown[]): GatewayIR {
  const compiled = compileDefinition({
    listeners: { http: { port: 8080 } },
    identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { member: ['read:own_profile'] } },
    policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
    services: { customer: { endpoints: ['127.0.0.1:3001'] } },
    routes: routes ?? [
      { match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] },
      { match: 'POST /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'], cors: false },
      { match: '/api/v1/auth/*', to: 'customer', auth: 'none' },
    ],
    edge,
  });
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
  return compiled.ir;
}

/** Envoy's safe_regex matches the whole value; RE2 and JS agree on this subset. */
function matches(pattern: string, origin: string): boolean {
  return new RegExp(`^(?:${originRegex(parseOrigin(pattern))})$`).test(origin);
}

describe('origin patterns', () => {
  it.each([
    ['https://*.example.com', 'https://app.example.com', true],
    ['https://*.example.com', 'https://a-1.example.com', true],
    ['https://*.example.com', 'https://example.com', false],
    ['https://*.example.com', 'https://evil-example.com', false],
    ['https://*.example.com', 'https://x.example.com.evil', false],
    ['https://*.example.com', 'https://a.b.example.com', false],
    ['https://*.example.com', 'http://app.example.com', false],
    ['https://*.example.com', 'https://app.example.com:8443', false],
    ['https://*.example.com:8443', 'https://app.example.com:8443', true],
    ['https://app.example', 'https://appxexample', false],
    ['https://app.example', 'https://app.example', true],
  ])('%s against %s: %s', (pattern, origin, expected) => {
    expect(matches(pattern, origin)).toBe(expected);
  });
});

describe('preflight routes', () => {
  it('come first, a pair per route in the routes’ order, then one refusal for everything else', () => {
    const ir = compile({ cors: { allowOrigins: ['https://app.example'] } });
    const [config] = translateRoutes(ir);
    expect(config?.virtualHosts[0]?.routes.map((route) => route.name)).toEqual([
      'get-api-v1-customer-profile.preflight',
      'get-api-v1-customer-profile.preflight-refused',
      // cors: false: every preflight for it is refused.
      'post-api-v1-customer-profile.preflight-refused',
      'api-v1-auth-prefix.preflight',
      'api-v1-auth-prefix.preflight-refused',
      'preflight-refused',
      // Then the routes, each after its 413-on-Content-Length (body-limit.ts), then the 405s.
      'get-api-v1-customer-profile:body-too-large',
      'get-api-v1-customer-profile',
      'post-api-v1-customer-profile:body-too-large',
      'post-api-v1-customer-profile',
      'api-v1-auth-prefix:body-too-large',
      'api-v1-auth-prefix',
      'method-not-allowed:exact:/api/v1/customer/profile',
    ]);
  });

  it('match the request method a preflight asks about, never the OPTIONS itself as a normal route', () => {
    const ir = compile({ cors: { allowOrigins: ['https://app.example'] } });
    const declared = (translateRoutes(ir)[0]?.virtualHosts[0]?.routes ?? []).filter(
      (route) => !route.name.includes('preflight') && !route.name.includes(':'),
    );
    const [allowed] = preflightRoutes(ir, declared);
    const headers = Object.fromEntries((allowed?.match?.headers ?? []).map((header) => [header.name, header]));
    expect(headers[':method']?.stringMatch?.exact).toBe('OPTIONS');
    expect(headers['access-control-request-method']?.stringMatch?.exact).toBe('GET');
    expect(headers.origin?.stringMatch?.safeRegex?.regex).toBe('(?:https://app\\.example)');
  });

  it('do not exist when no route has CORS', () => {
    const ir = compile({});
    expect(
      translateRoutes(ir)[0]
        ?.virtualHosts[0]?.routes.map((route) => route.name)
        .filter((name) => name.includes('preflight')),
    ).toEqual([]);
    expect(
      httpFilters(ir, clientAddressChains(ir)[0] as ClientAddressChain, { tls: false }).map((filter) => filter.name),
    ).not.toContain('envoy.filters.http.cors');
  });
});

describe('security headers and filter order', () => {
  it('send HSTS on TLS listeners only', () => {
    const ir = compile({});
    const names = (tls: boolean) => securityResponseHeaders(ir, { tls }).map((header) => header.name);
    expect(names(false)).not.toContain('strict-transport-security');
    expect(securityResponseHeaders(ir, { tls: true })[0]).toEqual({
      name: 'strict-transport-security',
      value: 'max-age=31536000; includeSubDomains',
    });
    expect(names(true).slice(1)).toEqual(names(false));
  });

  it('never send HSTS when it is turned off', () => {
    const ir = compile({ securityHeaders: { strictTransportSecurity: false } });
    expect(securityResponseHeaders(ir, { tls: true }).map((header) => header.name)).not.toContain(
      'strict-transport-security',
    );
  });

  it('run the security headers first, CORS and CSRF before ext_authz, compression just before the router', () => {
    const ir = compile({ cors: { allowOrigins: ['https://app.example'] } });
    expect(
      httpFilters(ir, clientAddressChains(ir)[0] as ClientAddressChain, { tls: false }).map((filter) => filter.name),
    ).toEqual([
      'sekisho.security_headers',
      'sekisho.request_header_hygiene',
      'envoy.filters.http.header_mutation',
      'envoy.filters.http.cors',
      'envoy.filters.http.csrf',
      'envoy.filters.http.buffer',
      'sekisho.filters.http.ratelimit_before_auth',
      'envoy.filters.http.ext_authz',
      'envoy.filters.http.ratelimit',
      'envoy.filters.http.compressor.br',
      'envoy.filters.http.compressor.gzip',
      'envoy.filters.http.router',
    ]);
  });
});
