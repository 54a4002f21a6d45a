// CORS: which browser origins may call the gateway, and what they may send and read. Envoy's
// CORS filter answers preflights itself (before authentication: a preflight carries no token).
import { z } from 'zod';
import { seconds } from '../fields';

/** A port a browser never writes in an Origin, because it is the scheme's default. */
const defaultPorts: Record<string, string> = { http: '80', https: '443' };

const hostLabel = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?';
const originPattern = new RegExp(`^(https?)://(\\*\\.)?(${hostLabel}(?:\\.${hostLabel})*)(?::(\\d{1,5}))?$`);

/** `https://app.example`, `http://localhost:5173` or `https://*.example.com` (exactly one label). */
export const corsOrigin = z.string().superRefine((text, ctx) => {
  const parsed = originPattern.exec(text);
  if (!parsed) {
    ctx.addIssue({
      code: 'custom',
      message: `must be an origin "scheme://host[:port]" in lower case (http or https, no path, no trailing "/"), or a pattern "https://*.example.com", got "${text}"`,
    });
    return;
  }
  const [, scheme = '', , , port] = parsed;
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65_535)) {
    ctx.addIssue({ code: 'custom', message: `port must be 1-65535, got "${text}"` });
  } else if (port !== undefined && defaultPorts[scheme] === port) {
    ctx.addIssue({
      code: 'custom',
      message: `browsers leave the default port out of Origin, so "${text}" would never match: write it without ":${port}"`,
    });
  }
});

export const corsMethods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

const headerName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9-]*$/, { message: 'must be a header name (letters, digits, "-"), e.g. content-type' });

/** The fields of a CORS policy, none defaulted: a route's override names only what it changes. */
const corsFields = {
  allowOrigins: z.array(corsOrigin).min(1),
  allowMethods: z.array(z.enum(corsMethods)).min(1),
  allowHeaders: z.array(headerName),
  exposeHeaders: z.array(headerName),
  allowCredentials: z.boolean(),
  maxAge: seconds,
};

/** Every default is what a single-page app calling a JSON API with a bearer token needs. */
export const corsDefaults = {
  allowMethods: [...corsMethods],
  allowHeaders: ['authorization', 'content-type'],
  exposeHeaders: ['x-request-id', 'retry-after'],
  allowCredentials: false,
  maxAge: '10m',
} as const;

export const corsSchema = z.strictObject({
  allowOrigins: corsFields.allowOrigins,
  allowMethods: corsFields.allowMethods.default([...corsDefaults.allowMethods]),
  allowHeaders: corsFields.allowHeaders.default([...corsDefaults.allowHeaders]),
  exposeHeaders: corsFields.exposeHeaders.default([...corsDefaults.exposeHeaders]),
  allowCredentials: corsFields.allowCredentials.default(corsDefaults.allowCredentials),
  maxAge: corsFields.maxAge.default(corsDefaults.maxAge),
});

/** On a route: `false` (no CORS on it), or the fields that differ from `edge.cors`. */
export const routeCorsSchema = z.union([
  z.literal(false),
  z.strictObject({
    allowOrigins: corsFields.allowOrigins.optional(),
    allowMethods: corsFields.allowMethods.optional(),
    allowHeaders: corsFields.allowHeaders.optional(),
    exposeHeaders: corsFields.exposeHeaders.optional(),
    allowCredentials: corsFields.allowCredentials.optional(),
    maxAge: corsFields.maxAge.optional(),
  }),
]);
