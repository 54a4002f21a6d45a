// Threat detection (reference design §5.2): the rules the threat detector applies to what Envoy
// served. Present, the ingress streams its access log to policyServices.threatDetector; each
// rule has the reference's values as defaults and `false` turns it off.
import { z } from 'zod';
import { duration, headerName } from './fields';

const count = z.int().min(1).max(1_000_000_000);

/** Off, or the rule's settings (every field defaulted to the reference design). */
function rule<T extends z.ZodRawShape>(fields: T) {
  const settings = z.strictObject(fields);
  return z.union([settings, z.literal(false, { message: 'rules are on by default: give their settings or false' })]);
}

export const threatsSchema = z.strictObject({
  /** Ids of the sign-in routes, whose own 401 or 403 counts as a failed login. */
  loginRoutes: z.array(z.string().min(1)).default([]),
  /** More than `failures` failed authentications within `within` from one IP → block the IP. */
  bruteForce: rule({
    failures: count.default(5),
    within: duration.default('15m'),
    blockIpFor: duration.default('1h'),
    /** ext-authz's 401s (a bad or expired token) count too, not only the login routes' answers. */
    countTokenFailures: z.boolean().default(true),
  }).default({ failures: 5, within: '15m', blockIpFor: '1h', countTokenFailures: true }),
  /** More than `calls` within `within` by one user → `limit` requests per `per` for `for`. */
  suspiciousUsage: rule({
    calls: count.default(1_000),
    within: duration.default('1h'),
    limit: count.default(10),
    per: duration.default('1m'),
    for: duration.default('30m'),
  }).default({ calls: 1_000, within: '1h', limit: 10, per: '1m', for: '30m' }),
  /** More than `megabytes` (MiB) of response bodies within `within` by one user → block the user. */
  dataExfiltration: rule({
    megabytes: z.number().positive().max(1_000_000).default(100),
    within: duration.default('1h'),
    blockUserFor: duration.default('30m'),
  }).default({ megabytes: 100, within: '1h', blockUserFor: '30m' }),
  /**
   * A sign-in (a token with a new auth_time) farther than `distanceKm` from each of the user's
   * last `usualLocations` trusted sign-in places (kept `rememberFor`) → additional
   * authentication for `for`: 401 ADDITIONAL_AUTH_REQUIRED unless the token shows a second
   * factor or the device is trusted. The place comes from the CDN's latitude/longitude headers
   * (believed only from edge.trustedProxies), else from the detector's GeoIP database.
   */
  geoAnomaly: rule({
    distanceKm: z.number().positive().max(40_000).default(1_000),
    for: duration.default('1h'),
    usualLocations: z.int().min(1).max(50).default(5),
    rememberFor: duration.default('90d'),
    latitudeHeader: headerName.default('cf-iplatitude'),
    longitudeHeader: headerName.default('cf-iplongitude'),
  }).default({
    distanceKm: 1_000,
    for: '1h',
    usualLocations: 5,
    rememberFor: '90d',
    latitudeHeader: 'cf-iplatitude',
    longitudeHeader: 'cf-iplongitude',
  }),
  /** How long Envoy buffers entries before it sends them (its buffer_flush_interval). */
  flushInterval: duration.default('1s'),
});
