// The typed gateway definition. One zod schema validates YAML/JSON and gives TypeScript
// definitions their types (inferred below, never written twice). Objects are strict so a
// misspelt key is an error instead of a silently ignored setting. Cross-references
// (a route naming a service, a permission some group grants) are checked in the IR.
import { z } from 'zod';
import { edgeSchema } from './edge';
import { identifier, permission, seconds } from './fields';
import { listenersSchema } from './listeners';
import { meshSchema } from './mesh';
import { routeSchema, serviceName } from './routes';
import { extAuthzServiceSchema, rateLimitServiceSchema, serviceSchema, threatDetectorServiceSchema } from './services';
import { threatsSchema } from './threats';

export { matchPattern } from './routes';

const groupName = identifier('a group name');

const requestsPerWindow = z.int().min(1).max(4_294_967_295);

/** The rate-limit service's bound: a sliding window keeps one Redis entry per accepted request. */
export const maxSlidingLimit = 10_000;

const limitFields = {
  limit: requestsPerWindow,
  window: seconds,
  /**
   * fixed: windows aligned to the clock (up to 2× the limit across a boundary); sliding: the
   * last `window`, exactly; tokenBucket: limit/window sustained, `burst` at once (GCRA).
   */
  algorithm: z.enum(['fixed', 'sliding', 'tokenBucket']).default('fixed'),
  /** tokenBucket only: requests that may arrive at once; default the limit. */
  burst: requestsPerWindow.optional(),
  /** Once the limit is exceeded, refuse every request of that key for this long. */
  blockFor: seconds.optional(),
  /** Decide, count, log and measure, but never refuse; default `limits.shadow`. */
  shadow: z.boolean().optional(),
};

type LimitFields = { algorithm: string; burst?: number | undefined; limit: number };

function checkAlgorithm(limit: LimitFields, ctx: z.RefinementCtx) {
  if (limit.burst !== undefined && limit.algorithm !== 'tokenBucket')
    ctx.addIssue({ code: 'custom', path: ['burst'], message: 'burst applies only to algorithm: tokenBucket' });
  if (limit.algorithm === 'sliding' && limit.limit > maxSlidingLimit)
    ctx.addIssue({
      code: 'custom',
      path: ['limit'],
      message: `a sliding window counts at most ${maxSlidingLimit} requests; use fixed or tokenBucket above that`,
    });
}

const userLimit = z
  .strictObject({
    per: z.literal('user', { message: 'authenticated limits count per user: per must be "user"' }),
    ...limitFields,
  })
  .superRefine(checkAlgorithm);

const ipLimit = z
  .strictObject({
    per: z.literal('ip', { message: 'unauthenticated limits count per client IP: per must be "ip"' }),
    ...limitFields,
  })
  .superRefine(checkAlgorithm);

const routeLimit = z
  .strictObject({
    per: z.enum(['user', 'ip']),
    ...limitFields,
  })
  .superRefine(checkAlgorithm);

const group = z.union([
  z.array(permission),
  z.strictObject({
    inherits: z.union([groupName, z.array(groupName).min(1)]),
    adds: z.array(permission).default([]),
  }),
]);

// Claims every ID token has with a fixed meaning; `uid` names the one that is an id.
const reservedClaims = new Set(['iss', 'aud', 'sub', 'iat', 'exp', 'auth_time', 'nbf', 'firebase', 'user_id']);

/** Firebase's provider ids: "password", "phone", "anonymous", "custom", "google.com", "oidc.<name>", "saml.<name>". */
const signInProvider = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,99}$/, {
  message: 'must be a Firebase sign-in provider id, e.g. password, phone, google.com, oidc.my-idp',
});
/** Identity Platform tenant ids: letters, digits and "-" (e.g. "salon-a-x1y2z"). */
const tenantId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/, { message: 'must be a tenant id (letters, digits and "-")' });

function uniqueList<T extends z.ZodString>(item: T) {
  return z.array(item).superRefine((items, ctx) => {
    const seen = new Set<string>();
    for (const [index, value] of items.entries()) {
      if (seen.has(value)) ctx.addIssue({ code: 'custom', path: [index], message: `names "${value}" twice` });
      seen.add(value);
    }
  });
}

const route = routeSchema(routeLimit);
export const gatewayDefinitionSchema = z.strictObject({
  listeners: listenersSchema,
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
    /** Accepted firebase.sign_in_provider values; absent = every provider except anonymous. */
    signInProviders: uniqueList(signInProvider).min(1).optional(),
    /**
     * Where the caller's customer id is, for routes with `owner`: the token's uid, or a
     * custom claim (set by the admin tooling, e.g. customer_id).
     */
    customerId: z
      .union([
        z.literal('uid'),
        z.strictObject({
          claim: z
            .string()
            .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: 'must be a claim name, e.g. customer_id' })
            .refine((name) => !reservedClaims.has(name), { message: 'is a standard claim, not a customer id' }),
        }),
      ])
      .optional(),
    /** Every authenticated route in dry-run unless it says otherwise (routes[].dryRun). */
    dryRun: z.boolean().default(false),
    /** Accepted firebase.tenant ids; absent = tokens of any tenant are refused. */
    tenants: uniqueList(tenantId).default([]),
  }),
  policyServices: z.strictObject({
    extAuthz: extAuthzServiceSchema,
    rateLimit: rateLimitServiceSchema,
    /** The access-log receiver of threat detection; required when `threats` is set. */
    threatDetector: threatDetectorServiceSchema.optional(),
  }),
  services: z.record(serviceName, serviceSchema),
  limits: z
    .strictObject({
      /** Every limit (global and per route) in shadow mode unless it says `shadow: false`. */
      shadow: z.boolean().default(false),
      authenticated: z.array(userLimit).default([]),
      unauthenticated: z.array(ipLimit).default([]),
    })
    .default({ shadow: false, authenticated: [], unauthenticated: [] }),
  routes: z.array(route).min(1),
  // prefault: the default goes through the schema, so the edge fields' own defaults apply.
  edge: edgeSchema.prefault({}),
  /** Threat detection from the access log (reference design §5.2); absent = off. */
  threats: threatsSchema.optional(),
  /** The services behind Sekisho sidecars and who may call them (definition/mesh.ts); absent = no mesh. */
  mesh: meshSchema(routeLimit).optional(),
});

/** What a definition file may contain (defaults not yet applied). */
export type GatewayDefinitionInput = z.input<typeof gatewayDefinitionSchema>;
/** A validated definition with every default applied. */
export type GatewayDefinition = z.output<typeof gatewayDefinitionSchema>;
