// The routes of the gateway definition. A route matches requests (the short string form
// "METHOD /path" or an object with a regex, a URI template, several methods, header and
// query conditions) and then does one thing: forwards to a service (`to`), splits across
// services by weight (`split`), answers by itself (`directResponse`) or redirects.
import { sekishoHeaderPrefix } from '@sekisho/service-kit/contract';
import { z } from 'zod';
import { maxRequestBodyBytes } from './edge/body-limit';
import { routeCorsSchema } from './edge/cors';
import { routeSecurityHeadersSchema } from './edge/security-headers';
import { duration, permission, urlPath } from './fields';

export const httpMethods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** "METHOD /path" or "/path"; a trailing "/*" makes it a prefix match. */
export const matchPattern = new RegExp(`^(?:(${httpMethods.join('|')}) )?(/[^\\s?#*]*?)(\\*)?$`);

export const serviceName = z
  .string()
  .regex(/^[a-z][a-z0-9-]*$/, { message: 'a service name is lower-case letters, digits and "-"' });

/** A route's id (an ingress route's, a mesh route's within its service). */
export const routeId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]*$/, { message: 'a route id is lower-case letters, digits, ".", "_" and "-"' });

/**
 * The short match form, "METHOD /path" or "/prefix/*" (also a mesh route's match); with
 * `method: false`, a path alone ("/path" or "/prefix/*": a mesh allow rule's, whose methods are
 * a list of their own).
 */
function shortMatch(method: boolean) {
  return z.string().superRefine((text, ctx) => {
    const parsed = matchPattern.exec(text);
    if (!parsed || (!method && parsed[1] !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: method
          ? `must be "METHOD /path" or "/path" (METHOD one of ${httpMethods.join(', ')}; a trailing "/*" matches a prefix), got "${text}"`
          : `must be "/path" or "/prefix/*", got "${text}"`,
      });
    } else if (parsed[3] && !parsed[2]?.endsWith('/')) {
      ctx.addIssue({ code: 'custom', message: `"*" is only allowed as a trailing "/*", got "${text}"` });
    }
  });
}
export const matchString = shortMatch(true);
export const pathString = shortMatch(false);

/**
 * Envoy's regexes are RE2: no look-around and no back-references. JavaScript accepts
 * both, so they are refused here rather than by Envoy (which would NACK the whole config).
 */
export const re2Regex = z.string().superRefine((text, ctx) => {
  try {
    new RegExp(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `is not a valid regex: ${(error as Error).message}` });
    return;
  }
  if (/\(\?<?[=!]/.test(text) || /\\[1-9]/.test(text)) {
    ctx.addIssue({
      code: 'custom',
      message: 'Envoy regexes are RE2: look-around and back-references are not supported',
    });
  }
});

/** A URI template segment: a literal, `{name}` (one segment), `{name=*}` or `{name=**}` (the rest). */
const templateSegment = /^(?:[A-Za-z0-9._~!$&'()+,;=:@-]+|\{[a-z_][a-z0-9_]*(?:=\*\*?)?\})$/;

export const uriTemplate = z.string().superRefine((text, ctx) => {
  const segments = text.split('/');
  if (segments[0] !== '' || segments.length < 2) {
    ctx.addIssue({ code: 'custom', message: `must start with "/", got "${text}"` });
    return;
  }
  const rest = segments.slice(1);
  const bad = rest.find((segment) => !templateSegment.test(segment));
  if (bad !== undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `segment "${bad}" must be a literal or a variable {name}, {name=*} or {name=**} (lower_snake_case names)`,
    });
    return;
  }
  const names = rest.flatMap((segment) => (segment.startsWith('{') ? [templateVariable(segment)] : []));
  if (new Set(names).size !== names.length) ctx.addIssue({ code: 'custom', message: 'names a variable twice' });
  if (rest.slice(0, -1).some((segment) => segment.endsWith('=**}'))) {
    ctx.addIssue({ code: 'custom', message: 'only the last segment may be {name=**}' });
  }
});

/** "{id=**}" → "id". */
export function templateVariable(segment: string): string {
  return segment.slice(1, -1).split('=')[0] ?? '';
}

const headerName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*$/, { message: 'a header name is lower-case letters, digits and "-"' });

const valueMatchFields = {
  name: headerName,
  exact: z.string().optional(),
  prefix: z.string().min(1).optional(),
  regex: re2Regex.optional(),
  present: z.literal(true).optional(),
};

/** Exactly one way to compare a value; `present` checks only that it is there. */
function oneComparison(
  condition: { exact?: string; prefix?: string; regex?: string; present?: true },
  ctx: z.RefinementCtx,
): void {
  const set = (['exact', 'prefix', 'regex', 'present'] as const).filter((key) => condition[key] !== undefined);
  if (set.length !== 1) {
    ctx.addIssue({
      code: 'custom',
      message: `set exactly one of exact, prefix, regex or present (got ${set.length === 0 ? 'none' : set.join(', ')})`,
    });
  }
}

const headerMatch = z
  .strictObject({
    ...valueMatchFields,
    /** Matches when the condition does not hold (a missing header is then a match too). */
    invert: z.boolean().default(false),
  })
  .superRefine(oneComparison);
const queryMatch = z.strictObject(valueMatchFields).superRefine(oneComparison);

const pathKinds = ['path', 'prefix', 'regex', 'template'] as const;

const matchObject = z
  .strictObject({
    /** Any of these methods; absent = every method. */
    methods: z.array(z.enum(httpMethods)).min(1).optional(),
    path: urlPath.optional(),
    /** Every path starting with this; end it with "/" to match whole segments. */
    prefix: urlPath.optional(),
    /** RE2, matched against the whole path (no query). */
    regex: re2Regex.optional(),
    /** e.g. "/api/v1/appointments/{id}" (Envoy's uri_template matcher). */
    template: uriTemplate.optional(),
    headers: z.array(headerMatch).default([]),
    query: z.array(queryMatch).default([]),
  })
  .superRefine((match, ctx) => {
    const set = pathKinds.filter((key) => match[key] !== undefined);
    if (set.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: `set exactly one of ${pathKinds.join(', ')} (got ${set.length === 0 ? 'none' : set.join(', ')})`,
      });
    }
    if (match.methods !== undefined && new Set(match.methods).size !== match.methods.length) {
      ctx.addIssue({ code: 'custom', path: ['methods'], message: 'names a method twice' });
    }
  });

export const routeMatch = z.union([matchString, matchObject]);

const regexRewrite = z.strictObject({
  regex: re2Regex,
  /** May use RE2 capture groups: "\\1". */
  substitution: z.string(),
});

/**
 * Headers Sekisho owns (the verified identity), pseudo-headers and Host: a route that set
 * or removed these could forge an identity or break routing.
 */
const mutableHeaderName = headerName.refine((name) => !name.startsWith(sekishoHeaderPrefix) && name !== 'host', {
  message: `headers starting with "${sekishoHeaderPrefix}" and host cannot be changed by a route`,
});

const headerChanges = z.strictObject({
  /** Added to what is there (a second value when the header exists). */
  add: z.record(mutableHeaderName, z.string()).default({}),
  /** Replaces what is there. */
  set: z.record(mutableHeaderName, z.string()).default({}),
  remove: z.array(mutableHeaderName).default([]),
});

/** Envoy's retry_on conditions (x-envoy-retry-on and x-envoy-retry-grpc-on for HTTP). */
export const retryConditions = [
  '5xx',
  'gateway-error',
  'reset',
  'reset-before-request',
  'connect-failure',
  'envoy-ratelimited',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'http3-post-connect-failure',
] as const;

/** A route's retries; also the outbound retries of calls to a mesh service (mesh.ts). */
export const retries = z.strictObject({
  /** Default: only failures where the request never reached the service (safe for a POST). */
  on: z.array(z.enum(retryConditions)).min(1).default(['connect-failure', 'refused-stream']),
  /** Retries after the first try; 0 turns retrying off. */
  count: z.int().min(0).max(10).default(2),
  /** Status codes that `retriable-status-codes` retries. */
  statusCodes: z.array(z.int().min(100).max(599)).default([]),
  perTryTimeout: duration.optional(),
  /** Per-try idle timeout (no bytes from the service for this long ends the try). */
  perTryIdleTimeout: duration.optional(),
  backOff: z.strictObject({ base: duration, max: duration.optional() }).default({ base: '25ms', max: '250ms' }),
});

const split = z
  .array(
    z.strictObject({
      to: serviceName,
      /** Relative weight; a weight of 0 sends nothing (a service being drained). */
      weight: z.int().min(0).max(10_000),
    }),
  )
  .min(2, { message: 'a split needs at least two services (use to: for one)' })
  .superRefine((entries, ctx) => {
    if (entries.every((entry) => entry.weight === 0)) {
      ctx.addIssue({ code: 'custom', message: 'at least one weight must be above 0' });
    }
    const seen = new Set<string>();
    for (const [index, entry] of entries.entries()) {
      if (seen.has(entry.to))
        ctx.addIssue({ code: 'custom', path: [index, 'to'], message: `names "${entry.to}" twice` });
      seen.add(entry.to);
    }
  });

const directResponse = z.strictObject({
  status: z.int().min(200).max(599),
  body: z.string().max(4096).optional(),
  /** Content-Type of the body; default application/json; charset=utf-8. */
  contentType: z.string().min(1).default('application/json; charset=utf-8'),
});

const redirect = z
  .strictObject({
    scheme: z.enum(['http', 'https']).optional(),
    host: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i, { message: 'must be a host name, e.g. app.example.com' })
      .optional(),
    port: z.int().min(1).max(65_535).optional(),
    /** Replaces the whole path. */
    path: urlPath.optional(),
    /** Replaces the matched prefix (prefix matches only). */
    prefixRewrite: urlPath.optional(),
    status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]).default(301),
    stripQuery: z.boolean().default(false),
  })
  .superRefine((value, ctx) => {
    if (value.path !== undefined && value.prefixRewrite !== undefined) {
      ctx.addIssue({ code: 'custom', message: 'set path or prefixRewrite, not both' });
    }
    if (
      value.scheme === undefined &&
      value.host === undefined &&
      value.port === undefined &&
      value.path === undefined &&
      value.prefixRewrite === undefined
    ) {
      ctx.addIssue({ code: 'custom', message: 'set at least one of scheme, host, port, path or prefixRewrite' });
    }
  });

const ownerSchema = z
  .strictObject({
    /** A variable of the route's template match, e.g. "id" for /api/v1/customers/{id}. */
    param: z
      .string()
      .regex(/^[a-z_][a-z0-9_]*$/, { message: 'must be a template variable name (lower_snake_case)' })
      .optional(),
    /** A query parameter, e.g. "customer_id". */
    query: z
      .string()
      .regex(/^[A-Za-z0-9._~-]+$/, { message: 'must be a query parameter name (letters, digits, ".", "_", "~", "-")' })
      .optional(),
  })
  .superRefine((owner, ctx) => {
    if ((owner.param === undefined) === (owner.query === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'set exactly one of param or query' });
    }
  });

const actions = ['to', 'split', 'directResponse', 'redirect'] as const;

/** The route limit schema lives with the other limits; it is passed in to keep one copy. */
export function routeSchema<Limit extends z.ZodType>(routeLimit: Limit) {
  return z
    .strictObject({
      /** Stable id used in logs, metrics, rate-limit keys; default: slug of the match. */
      id: routeId.optional(),
      match: routeMatch,
      to: serviceName.optional(),
      /** Weighted services (canary): each request goes to one of them. */
      split: split.optional(),
      /** Envoy answers by itself; the request still passes authentication unless auth: none. */
      directResponse: directResponse.optional(),
      redirect: redirect.optional(),
      /**
       * Replaces the matched path or prefix; with a template match, a template using its
       * variables ("/appointments/{id}"); or a regex and substitution for any match.
       */
      rewrite: z.union([urlPath, regexRewrite]).optional(),
      /** Upstream request timeout; default: the service's (the longest one for a split). */
      timeout: duration.optional(),
      /** Ends the request when neither side sends anything for this long. */
      idleTimeout: duration.optional(),
      retries: retries.optional(),
      requestHeaders: headerChanges.optional(),
      responseHeaders: headerChanges.optional(),
      /**
       * required: a valid token; none: nobody is verified; optional: a valid token sets the
       * identity headers, no Authorization header passes anonymously, a bad token is refused.
       */
      auth: z.enum(['required', 'optional', 'none']).default('required'),
      /** Permissions the caller needs, all of them. */
      require: z.array(permission).default([]),
      /**
       * Ownership (the "own" of read:own_profile): the template variable (`param`) or query
       * parameter (`query`) that must equal the caller's customer id (identity.customerId).
       */
      owner: ownerSchema.optional(),
      /**
       * Decide, log and count as usual, but let a verified caller the policy refuses through,
       * marked x-sekisho-dry-run-denied: <code>. Default: identity.dryRun.
       */
      dryRun: z.boolean().optional(),
      limits: z.array(routeLimit).default([]),
      /** Overrides edge.maxRequestBodyBytes for this route. */
      maxRequestBodyBytes: maxRequestBodyBytes.optional(),
      /** Overrides edge.cors for this route (false: no CORS). */
      cors: routeCorsSchema.optional(),
      /** Overrides edge.securityHeaders for this route's responses. */
      securityHeaders: routeSecurityHeadersSchema.optional(),
    })
    .superRefine((route, ctx) => {
      const set = actions.filter((key) => route[key] !== undefined);
      if (set.length !== 1) {
        ctx.addIssue({
          code: 'custom',
          message: `set exactly one of ${actions.join(', ')} (got ${set.length === 0 ? 'none' : set.join(', ')})`,
        });
      }
      if (set.length === 1 && route.to === undefined && route.split === undefined) {
        // Only forwarding routes have an upstream to rewrite for, time out or retry.
        for (const key of ['rewrite', 'timeout', 'idleTimeout', 'retries', 'requestHeaders'] as const) {
          if (route[key] !== undefined) {
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message: 'only applies to a route that forwards (to or split)',
            });
          }
        }
      }
    });
}
