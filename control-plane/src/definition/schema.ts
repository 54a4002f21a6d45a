// The typed gateway definition. One zod schema validates YAML/JSON and gives TypeScript
// definitions their types (inferred below, never written twice). Objects are strict so a
// misspelt key is an error instead of a silently ignored setting. Cross-references
// (a route naming a service, a permission some group grants) are checked in the IR.
import { isIP } from 'node:net';
import { z } from 'zod';
import { edgeSchema } from './edge';
import { maxRequestBodyBytes } from './edge/body-limit';
import { duration, hostPort, identifier, seconds, urlPath } from './fields';

const permission = z.string().regex(/^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$/, {
  message: 'a permission looks like "verb:object", e.g. read:own_profile',
});

const groupName = identifier('a group name');

const serviceName = z
  .string()
  .regex(/^[a-z][a-z0-9-]*$/, { message: 'a service name is lower-case letters, digits and "-"' });

const httpMethods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** "METHOD /path" or "/path"; a trailing "/*" makes it a prefix match. */
export const matchPattern = new RegExp(`^(?:(${httpMethods.join('|')}) )?(/[^\\s?#*]*?)(\\*)?$`);

const match = z.string().superRefine((text, ctx) => {
  const parsed = matchPattern.exec(text);
  if (!parsed) {
    ctx.addIssue({
      code: 'custom',
      message: `must be "METHOD /path" or "/path" (METHOD one of ${httpMethods.join(', ')}; a trailing "/*" matches a prefix), got "${text}"`,
    });
  } else if (parsed[3] && !parsed[2]?.endsWith('/')) {
    ctx.addIssue({ code: 'custom', message: `"*" is only allowed as a trailing "/*", got "${text}"` });
  }
});

const requestsPerWindow = z.int().min(1).max(4_294_967_295);

const limitFields = {
  limit: requestsPerWindow,
  window: seconds,
  /** Once the limit is exceeded, refuse every request of that key for this long. */
  blockFor: seconds.optional(),
};

const userLimit = z.strictObject({
  per: z.literal('user', { message: 'authenticated limits count per user: per must be "user"' }),
  ...limitFields,
});

const ipLimit = z.strictObject({
  per: z.literal('ip', { message: 'unauthenticated limits count per client IP: per must be "ip"' }),
  ...limitFields,
});

const routeLimit = z.strictObject({
  per: z.enum(['user', 'ip']),
  ...limitFields,
});

const group = z.union([
  z.array(permission),
  z.strictObject({
    inherits: z.union([groupName, z.array(groupName).min(1)]),
    adds: z.array(permission).default([]),
  }),
]);

const outlierDetection = z.strictObject({
  consecutive5xx: z.int().min(1).optional(),
  consecutiveGatewayFailure: z.int().min(1).optional(),
  interval: duration.optional(),
  baseEjectionTime: duration.optional(),
  maxEjectionPercent: z.int().min(0).max(100).optional(),
});

const service = z.strictObject({
  endpoints: z.array(hostPort).min(1),
  /** HTTP health-check path; no active health check when absent. */
  healthCheck: urlPath.optional(),
  outlierDetection: outlierDetection.optional(),
  /** Upstream request timeout (the route's timeout). */
  timeout: duration.default('15s'),
  connectTimeout: duration.default('1s'),
});

const route = z.strictObject({
  /** Stable id used in logs, metrics, rate-limit keys; default: slug of the match. */
  id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]*$/, { message: 'a route id is lower-case letters, digits, ".", "_" and "-"' })
    .optional(),
  match,
  to: serviceName,
  /** Replaces the matched path (or prefix) before forwarding. */
  rewrite: urlPath.optional(),
  auth: z.enum(['required', 'none']).default('required'),
  /** Permissions the caller needs, all of them. */
  require: z.array(permission).default([]),
  limits: z.array(routeLimit).default([]),
  /** Overrides edge.maxRequestBodyBytes for this route. */
  maxRequestBodyBytes: maxRequestBodyBytes.optional(),
});

const listener = z.strictObject({
  address: z
    .string()
    .refine((address) => isIP(address) !== 0, { message: 'must be an IP address, e.g. 0.0.0.0' })
    .default('0.0.0.0'),
  port: z.int().min(1).max(65_535),
  /** Proxies in front (CDN, load balancer) whose X-Forwarded-For entries are trusted. */
  xffNumTrustedHops: z.int().min(0).max(10).default(0),
});

export const gatewayDefinitionSchema = z.strictObject({
  listeners: z.strictObject({ http: listener }),
  identity: z.strictObject({
    firebase: z.strictObject({
      projectId: z
        .string()
        .regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, { message: 'must be a Firebase project id, e.g. demo-salon' }),
    }),
    /** The custom claim of the ID token that names the caller's group. */
    groupClaim: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: 'must be a claim name, e.g. tier' }),
    /** Group of verified tokens without the claim; such tokens are refused when absent. */
    defaultGroup: groupName.optional(),
    groups: z.record(groupName, group),
  }),
  policyServices: z.strictObject({
    extAuthz: z.strictObject({ address: hostPort, timeout: duration.default('500ms') }),
    rateLimit: z.strictObject({
      address: hostPort,
      timeout: duration.default('100ms'),
      /** What Envoy does when the rate-limit service cannot answer. */
      failureMode: z.enum(['allow', 'deny']).default('allow'),
    }),
  }),
  services: z.record(serviceName, service),
  limits: z
    .strictObject({
      authenticated: z.array(userLimit).default([]),
      unauthenticated: z.array(ipLimit).default([]),
    })
    .default({ authenticated: [], unauthenticated: [] }),
  routes: z.array(route).min(1),
  // prefault: the default goes through the schema, so the edge fields' own defaults apply.
  edge: edgeSchema.prefault({}),
});

/** What a definition file may contain (defaults not yet applied). */
export type GatewayDefinitionInput = z.input<typeof gatewayDefinitionSchema>;
/** A validated definition with every default applied. */
export type GatewayDefinition = z.output<typeof gatewayDefinitionSchema>;
