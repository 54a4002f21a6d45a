// Security headers on every response, Envoy's own replies included: the defaults helmet gives
// an Express app, with the reference design's Content-Security-Policy (section 5.1).
import { z } from 'zod';
import { seconds } from '../fields';

/** Printable ASCII only: a CR or LF in a value would split the response's headers. */
const headerValue = z
  .string()
  .min(1)
  .regex(/^[\x20-\x7e]+$/, { message: 'must be printable ASCII (no line breaks)' });

const optionalHeader = z.union([z.literal(false), headerValue]);

const cspDirective = /^[a-z][a-z-]*$/;
const cspSource = z
  .string()
  .min(1)
  .regex(/^[\x21-\x2b\x2d-\x3a\x3c-\x7e]+$/, { message: 'a CSP source has no spaces, "," or ";"' });

/** Directive → sources; an empty list is a directive without value (upgrade-insecure-requests). */
const contentSecurityPolicy = z.union([
  z.literal(false),
  // Directive names checked here rather than as record keys, so the error names the directive.
  z.record(z.string(), z.array(cspSource)).superRefine((directives, ctx) => {
    for (const name of Object.keys(directives)) {
      if (!cspDirective.test(name)) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `a CSP directive is lower-case letters and "-", e.g. script-src, got "${name}"`,
        });
      }
    }
  }),
]);

/** The reference design's directives, plus helmet's other defaults. */
export const defaultContentSecurityPolicy: Record<string, string[]> = {
  'default-src': ["'self'"],
  'base-uri': ["'self'"],
  'font-src': ["'self'", 'https://fonts.gstatic.com'],
  'form-action': ["'self'"],
  'frame-ancestors': ["'self'"],
  'img-src': ["'self'", 'data:', 'https:'],
  'object-src': ["'none'"],
  'script-src': ["'self'", "'unsafe-inline'", 'https://apis.google.com'],
  'script-src-attr': ["'none'"],
  'style-src': ["'self'", "'unsafe-inline'"],
  'upgrade-insecure-requests': [],
};

/** Field → response header, with helmet's default value (false: not sent). */
export const simpleSecurityHeaders = {
  xContentTypeOptions: { header: 'x-content-type-options', default: 'nosniff' },
  xFrameOptions: { header: 'x-frame-options', default: 'SAMEORIGIN' },
  referrerPolicy: { header: 'referrer-policy', default: 'no-referrer' },
  permissionsPolicy: {
    header: 'permissions-policy',
    default:
      'accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()',
  },
  crossOriginOpenerPolicy: { header: 'cross-origin-opener-policy', default: 'same-origin' },
  crossOriginResourcePolicy: { header: 'cross-origin-resource-policy', default: 'same-origin' },
  originAgentCluster: { header: 'origin-agent-cluster', default: '?1' },
  xDnsPrefetchControl: { header: 'x-dns-prefetch-control', default: 'off' },
  xDownloadOptions: { header: 'x-download-options', default: 'noopen' },
  xPermittedCrossDomainPolicies: { header: 'x-permitted-cross-domain-policies', default: 'none' },
  // helmet's choice: the old XSS auditor caused more harm than it prevented; 0 turns it off.
  xXssProtection: { header: 'x-xss-protection', default: '0' },
} as const;

type SimpleField = keyof typeof simpleSecurityHeaders;

const simpleFieldNames = Object.keys(simpleSecurityHeaders) as SimpleField[];

const defaultedFields = Object.fromEntries(
  simpleFieldNames.map((field) => [field, optionalHeader.default(simpleSecurityHeaders[field].default)]),
) as Record<SimpleField, z.ZodDefault<typeof optionalHeader>>;

const overrideFields = Object.fromEntries(
  simpleFieldNames.map((field) => [field, optionalHeader.optional()]),
) as Record<SimpleField, z.ZodOptional<typeof optionalHeader>>;

const strictTransportSecurity = z.union([
  z.literal(false),
  z.strictObject({
    maxAge: seconds.default('365d'),
    includeSubDomains: z.boolean().default(true),
    preload: z.boolean().default(false),
  }),
]);

export const securityHeadersSchema = z.strictObject({
  contentSecurityPolicy: contentSecurityPolicy.default(defaultContentSecurityPolicy),
  /** Sent on HTTPS listeners only (a browser ignores it over plain HTTP). */
  strictTransportSecurity: strictTransportSecurity.default({ maxAge: '365d', includeSubDomains: true, preload: false }),
  ...defaultedFields,
});

/** On a route: the headers that differ from edge.securityHeaders (`false` removes one). HSTS is per host. */
export const routeSecurityHeadersSchema = z.strictObject({
  contentSecurityPolicy: contentSecurityPolicy.optional(),
  ...overrideFields,
});
