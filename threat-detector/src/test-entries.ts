// Access-log entries shaped as Envoy sends them, for the detector's tests and its bench.
import { HTTPAccessLogEntry } from '@sekisho/proto/envoy/data/accesslog/v3/accesslog';
import {
  authzDynamicMetadataKeys,
  authzDynamicMetadataNamespace,
  identityHeaders,
} from '@sekisho/service-kit/contract';
import { type ThreatRules, threatRulesTag } from '@sekisho/service-kit/threat-contract';

export const referenceRules: ThreatRules = {
  loginRoutes: ['sign-in'],
  bruteForce: { failures: 5, withinMs: 900_000, blockMs: 3_600_000, countTokenFailures: true },
  suspiciousUsage: { calls: 1_000, withinMs: 3_600_000, limit: 10, limitWindowMs: 60_000, forMs: 1_800_000 },
  dataExfiltration: { bytes: 100 * 1024 * 1024, withinMs: 3_600_000, blockMs: 1_800_000 },
  geoAnomaly: {
    distanceKm: 1_000,
    forMs: 3_600_000,
    usualLocations: 5,
    rememberMs: 90 * 86_400_000,
    latitudeHeader: 'cf-iplatitude',
    longitudeHeader: 'cf-iplongitude',
  },
};

export function entry(opts: {
  ip?: string;
  /** The verified uid ext-authz put in its dynamic metadata. */
  user?: string;
  /** An x-sekisho-user-id request header in the entry (a client's, on a request Envoy refused early). */
  spoofedUserHeader?: string;
  status?: number;
  route?: string;
  bytes?: number;
  /** Denied by ext_authz (Envoy's UAEX flag). */
  extAuthzDenied?: boolean;
  /** ext-authz's authentication_failed metadata (a token that failed verification). */
  tokenFailed?: boolean;
  rules?: ThreatRules | string;
  /** ext-authz's auth_time and second_factor metadata (the verified token's). */
  authTimeS?: number;
  secondFactor?: string;
  /** The CDN's latitude and longitude headers, as the access log carries them. */
  place?: { latitude: number; longitude: number };
}): HTTPAccessLogEntry {
  const rules = opts.rules ?? referenceRules;
  return HTTPAccessLogEntry.fromPartial({
    commonProperties: {
      downstreamRemoteAddress: { socketAddress: { address: opts.ip ?? '203.0.113.7', portValue: 0 } },
      routeName: opts.route ?? 'profile',
      responseFlags: opts.extAuthzDenied ? { unauthorizedDetails: { reason: 1 } } : {},
      metadata: {
        filterMetadata: {
          [authzDynamicMetadataNamespace]: {
            ...(opts.tokenFailed ? { [authzDynamicMetadataKeys.authenticationFailed]: 'true' } : {}),
            ...(opts.user ? { [authzDynamicMetadataKeys.userId]: opts.user } : {}),
            ...(opts.authTimeS !== undefined ? { [authzDynamicMetadataKeys.authTime]: String(opts.authTimeS) } : {}),
            ...(opts.secondFactor ? { [authzDynamicMetadataKeys.secondFactor]: opts.secondFactor } : {}),
          },
        },
        typedFilterMetadata: {},
      },
      customTags: { [threatRulesTag]: typeof rules === 'string' ? rules : JSON.stringify(rules) },
    },
    // A header a client sent is never a verified user (facts.test.ts pins it).
    request: {
      requestHeaders: {
        ...(opts.spoofedUserHeader ? { [identityHeaders.userId]: opts.spoofedUserHeader } : {}),
        ...(opts.place
          ? // As a CDN writes them: a few decimals (6 are about 0.1 m).
            { 'cf-iplatitude': opts.place.latitude.toFixed(6), 'cf-iplongitude': opts.place.longitude.toFixed(6) }
          : {}),
      },
    },
    response: { responseCode: opts.status ?? 200, responseBodyBytes: opts.bytes ?? 0 },
  });
}
