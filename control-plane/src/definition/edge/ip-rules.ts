// edge.ipRules and edge.geoBlock: who may not call the gateway at all (the reference design's
// blacklist and high-risk countries), and the VIP addresses (its whitelist) that are never
// geo-blocked and skip the anonymous per-IP limits.
import { z } from 'zod';
import { cidr } from './cidr';

export const ipRules = z
  .strictObject({
    /** VIP clients: never geo-blocked, not counted by the anonymous per-IP limits. */
    allow: z.array(cidr).default([]),
    /** Refused with 403 IP_BLOCKED, VIP or not. */
    deny: z.array(cidr).default([]),
  })
  .default({ allow: [], deny: [] });

/** ISO 3166-1 alpha-2, plus Cloudflare's XX (unknown) and T1 (Tor). */
const countryCode = z.string().regex(/^(?:[A-Z]{2}|T1)$/, {
  message: 'must be an ISO 3166-1 alpha-2 country code in capitals (e.g. CN, RU), or XX / T1',
});

const headerName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*$/i, { message: 'must be an HTTP header name (letters, digits and "-")' });

const geoBlockObject = z.strictObject({
  countries: z.array(countryCode).min(1),
  /** The CDN's country header; believed only from edge.trustedProxies. */
  countryHeader: headerName.default('cf-ipcountry'),
});

export const geoBlock = z
  .union([z.array(countryCode).min(1), geoBlockObject])
  .transform((value) => (Array.isArray(value) ? { countries: value, countryHeader: 'cf-ipcountry' } : value))
  .optional();

export { headerName };
