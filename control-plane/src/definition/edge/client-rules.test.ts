// Invalid trusted proxies, IP and geo rules, header settings and the service fields of header
// hygiene are refused with the path of the offending field; valid ones are normalised in the IR.
import { describe, expect, it } from 'vitest';
import { buildIR } from '../../ir/build';
import { compileDefinition } from '../load';
import { cloudflareIpv4, cloudflareIpv6 } from '../presets/cloudflare-ips';
import { gatewayDefinitionSchema } from '../schema';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are mutated freely
type Def = any;

function definition(edge: Def = {}): Def {
  return {
    listeners: { http: { port: 8080 } },
    identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { basic: ['read:own_profile'] } },
    policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
    services: { customer: { endpoints: ['customer-service:3001'] } },
    routes: [{ match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] }],
    edge,
  };
}

const invalid: Array<{ name: string; def: Def; path: string; message: RegExp }> = [
  {
    name: 'a CIDR with a bad address',
    def: definition({ trustedProxies: ['10.0.0.300/8'] }),
    path: 'edge.trustedProxies[0]',
    message: /CIDR range.*preset: "cloudflare"/,
  },
  {
    name: 'an IPv4 prefix longer than 32',
    def: definition({ trustedProxies: ['10.0.0.0/33'] }),
    path: 'edge.trustedProxies[0]',
    message: /0–32/,
  },
  {
    name: 'an IPv6 prefix longer than 128',
    def: definition({ trustedProxies: '2001:db8::/129' }),
    path: 'edge.trustedProxies',
    message: /0–128/,
  },
  {
    name: 'an unknown preset',
    def: definition({ trustedProxies: ['cloudfront'] }),
    path: 'edge.trustedProxies[0]',
    message: /"cloudfront"/,
  },
  {
    name: 'a bad CIDR in the deny list',
    def: definition({ ipRules: { deny: ['198.51.100.0/-1'] } }),
    path: 'edge.ipRules.deny[0]',
    message: /prefix length/,
  },
  {
    name: 'a misspelt ipRules key',
    def: definition({ ipRules: { block: ['198.51.100.0/24'] } }),
    path: 'edge.ipRules.block',
    message: /.*/,
  },
  {
    name: 'a lower-case country code',
    def: definition({ trustedProxies: 'cloudflare', geoBlock: ['cn'] }),
    path: 'edge.geoBlock[0]',
    message: /ISO 3166-1 alpha-2/,
  },
  {
    name: 'a three-letter country code',
    def: definition({ trustedProxies: 'cloudflare', geoBlock: { countries: ['CHN'] } }),
    path: 'edge.geoBlock.countries[0]',
    message: /ISO 3166-1 alpha-2/,
  },
  {
    name: 'an empty country list',
    def: definition({ trustedProxies: 'cloudflare', geoBlock: [] }),
    path: 'edge.geoBlock',
    message: /.*/,
  },
  {
    name: 'a bad country header name',
    def: definition({ trustedProxies: 'cloudflare', geoBlock: { countries: ['RU'], countryHeader: 'cf ipcountry' } }),
    path: 'edge.geoBlock.countryHeader',
    message: /header name/,
  },
  {
    name: 'geo-blocking without trusted proxies (the country header would never be believed)',
    def: definition({ geoBlock: ['CN'] }),
    path: 'edge.geoBlock',
    message: /believed only from edge.trustedProxies/,
  },
  {
    name: 'stripping a header the gateway sets itself',
    def: definition({ headers: { strip: ['x-real-ip', 'X-Forwarded-For'] } }),
    path: 'edge.headers.strip[1]',
    message: /set by the gateway itself/,
  },
  {
    name: 'stripping Authorization instead of using receiveAuthorization',
    def: definition({ headers: { strip: ['authorization'] } }),
    path: 'edge.headers.strip[0]',
    message: /receiveAuthorization/,
  },
  {
    name: 'a header count limit too high',
    def: definition({ headers: { maxCount: 500 } }),
    path: 'edge.headers.maxCount',
    message: /.*/,
  },
  {
    name: 'a header size limit too small',
    def: definition({ headers: { maxSizeKb: 1 } }),
    path: 'edge.headers.maxSizeKb',
    message: /.*/,
  },
  {
    name: 'the old hop count',
    def: { ...definition(), listeners: { http: { port: 8080, xffNumTrustedHops: 1 } } },
    path: 'listeners.http.xffNumTrustedHops',
    message: /replaced by edge.trustedProxies/,
  },
  {
    name: 'a service host with a path',
    def: { ...definition(), services: { customer: { endpoints: ['127.0.0.1:3001'], host: 'customer/x' } } },
    path: 'services.customer.host',
    message: /host name/,
  },
];

describe('invalid client and header rules', () => {
  it.each(invalid)('refuses $name at $path', ({ def, path, message }) => {
    const result = compileDefinition(def);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors.map((error) => error.path)).toEqual([path]);
    expect(result.errors[0]?.message).toMatch(message);
  });
});

function ir(edge: Def, services?: Def) {
  const parsed = gatewayDefinitionSchema.parse({ ...definition(edge), ...(services ? { services } : {}) });
  const built = buildIR(parsed);
  if (!built.ok) throw new Error(JSON.stringify(built.errors));
  return built.ir;
}

describe('client and header rules in the IR', () => {
  it('expands the cloudflare preset to its IPv4 and IPv6 ranges, once, next to CIDRs', () => {
    const built = ir({ trustedProxies: ['10.0.0.0/8', 'cloudflare', '173.245.48.0/20'] });
    const ranges = built.clientAddress.trustedProxies.map((c) => `${c.address}/${c.prefixLen}`);
    expect(ranges).toEqual(['10.0.0.0/8', ...cloudflareIpv4, ...cloudflareIpv6]);
  });

  it('reads a bare address as a single-address range', () => {
    const built = ir({ ipRules: { allow: ['203.0.113.50', '2001:db8::1'] } });
    expect(built.ipRules.allow).toEqual([
      { address: '203.0.113.50', prefixLen: 32 },
      { address: '2001:db8::1', prefixLen: 128 },
    ]);
  });

  it('trusts nobody, strips the default headers and limits headers by default', () => {
    const built = ir({});
    expect(built.clientAddress.trustedProxies).toEqual([]);
    expect(built.ipRules).toEqual({ allow: [], deny: [], geoBlock: undefined });
    expect(built.requestHeaders.strip).toEqual(expect.arrayContaining(['x-real-ip', 'forwarded', 'x-original-url']));
    expect(built.requestHeaders).toMatchObject({ maxCount: 80, maxSizeKb: 32 });
  });

  it('gives the geo rule the Cloudflare country header by default', () => {
    const built = ir({ trustedProxies: 'cloudflare', geoBlock: ['RU', 'CN', 'CN'] });
    expect(built.ipRules.geoBlock).toEqual({ countries: ['CN', 'RU'], countryHeader: 'cf-ipcountry' });
  });

  it("sends the service's first endpoint host upstream unless the service names one, and no Authorization by default", () => {
    const built = ir(
      {},
      {
        customer: { endpoints: ['customer-service:3001'] },
        legacy: { endpoints: ['127.0.0.1:3002'], host: 'legacy.internal', receiveAuthorization: true },
      },
    );
    expect(built.routes[0]?.action).toMatchObject({
      clusters: [{ host: 'customer-service' }],
      forwardAuthorization: false,
    });
    const legacy = ir(
      {},
      { customer: { endpoints: ['127.0.0.1:3002'], host: 'legacy.internal', receiveAuthorization: true } },
    );
    expect(legacy.routes[0]?.action).toMatchObject({
      clusters: [{ host: 'legacy.internal' }],
      forwardAuthorization: true,
    });
  });
});
