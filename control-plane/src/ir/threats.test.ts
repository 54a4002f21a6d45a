// `threats` → the rules the detector reads: the reference design's defaults, units resolved,
// rules turned off, and the cross-references a typo would silently break.
import { describe, expect, it } from 'vitest';
import { type GatewayDefinitionInput, gatewayDefinitionSchema } from '../definition/schema';
import { buildIR } from './build';

const base = {
  listeners: { http: { port: 8080 } },
  identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { basic: ['read:own_profile'] } },
  policyServices: {
    extAuthz: { address: '127.0.0.1:9001' },
    rateLimit: { address: '127.0.0.1:9002' },
    threatDetector: { address: '127.0.0.1:9003' },
  },
  services: { customer: { endpoints: ['127.0.0.1:3001'] } },
  routes: [
    { id: 'sign-in', match: 'POST /api/v1/auth/login', to: 'customer', auth: 'none' },
    { match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] },
  ],
} satisfies GatewayDefinitionInput;

function build(overrides: Partial<GatewayDefinitionInput>) {
  return buildIR(gatewayDefinitionSchema.parse({ ...base, ...overrides }));
}

describe('threats', () => {
  it("applies the reference design's rules when only the section is there", () => {
    const built = build({ threats: {} });
    if (!built.ok) throw new Error(JSON.stringify(built.errors));
    expect(built.ir.threats).toEqual({
      clusterName: 'sekisho_threat_detector',
      flushIntervalMs: 1_000,
      rules: {
        loginRoutes: [],
        bruteForce: { failures: 5, withinMs: 900_000, blockMs: 3_600_000, countTokenFailures: true },
        suspiciousUsage: { calls: 1_000, withinMs: 3_600_000, limit: 10, limitWindowMs: 60_000, forMs: 1_800_000 },
        dataExfiltration: { bytes: 104_857_600, withinMs: 3_600_000, blockMs: 1_800_000 },
        geoAnomaly: {
          distanceKm: 1_000,
          forMs: 3_600_000,
          usualLocations: 5,
          rememberMs: 7_776_000_000,
          latitudeHeader: 'cf-iplatitude',
          longitudeHeader: 'cf-iplongitude',
        },
      },
    });
    expect(built.ir.clusters.map((cluster) => cluster.name)).toContain('sekisho_threat_detector');
  });

  it('leaves out a rule set to false', () => {
    const built = build({ threats: { suspiciousUsage: false, dataExfiltration: false, geoAnomaly: false } });
    if (!built.ok) throw new Error(JSON.stringify(built.errors));
    expect(Object.keys(built.ir.threats?.rules ?? {})).toEqual(['loginRoutes', 'bruteForce']);
  });

  it('lower-cases the location headers and takes the distance as given', () => {
    const built = build({
      threats: { geoAnomaly: { distanceKm: 500, latitudeHeader: 'X-Geo-Lat', longitudeHeader: 'X-Geo-Lon' } },
    });
    if (!built.ok) throw new Error(JSON.stringify(built.errors));
    expect(built.ir.threats?.rules.geoAnomaly).toMatchObject({
      distanceKm: 500,
      latitudeHeader: 'x-geo-lat',
      longitudeHeader: 'x-geo-lon',
    });
  });

  it('is off without the section, and no detector cluster exists', () => {
    const { threatDetector: _, ...policyServices } = base.policyServices;
    const built = build({ policyServices });
    if (!built.ok) throw new Error(JSON.stringify(built.errors));
    expect(built.ir.threats).toBeUndefined();
    expect(built.ir.clusters.map((cluster) => cluster.name)).not.toContain('sekisho_threat_detector');
  });

  it.each([
    {
      name: 'a login route no route has',
      overrides: { threats: { loginRoutes: ['sign-on'] } },
      error: { path: 'threats.loginRoutes[0]', message: 'names no route id: "sign-on"' },
    },
    {
      name: 'threats without a detector',
      overrides: {
        threats: {},
        policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
      },
      error: {
        path: 'threats',
        message: 'needs policyServices.threatDetector, the service that receives the access log',
      },
    },
    {
      name: 'a detector without threats',
      overrides: {},
      error: {
        path: 'policyServices.threatDetector',
        message: 'is set, but there is no threats section to send it logs for',
      },
    },
  ])('refuses $name', ({ overrides, error }) => {
    const built = build(overrides);
    expect(built.ok ? [] : built.errors).toContainEqual(error);
  });

  it('refuses true for a rule, naming the field', () => {
    const parsed = gatewayDefinitionSchema.safeParse({ ...base, threats: { bruteForce: true } });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.some((issue) => issue.path.join('.').startsWith('threats.bruteForce'))).toBe(true);
  });
});
