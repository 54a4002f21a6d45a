// The mesh section of the gateway definition: which services run behind a Sekisho sidecar,
// under which workload identity (SPIFFE id spiffe://<trustDomain>/ns/<namespace>/sa/<account>),
// where each sidecar listens, and which workloads may call which (service-to-service policy,
// decided on the caller's verified certificate). Cross-references (mesh services must be
// services of the definition, callers must be mesh services or the ingress) are checked in
// the IR (ir/mesh.ts), like every other cross-reference.
import { z } from 'zod';
import { isDnsName } from './endpoint';
import { hostPort, permission } from './fields';
import { httpMethods, matchString, pathString, retries, routeId, serviceName } from './routes';

/** Kubernetes names: RFC 1123 labels (namespaces, service accounts). */
const kubernetesName = (what: string) =>
  z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
    message: `${what} must be a lower-case RFC 1123 label (a-z, 0-9, "-"), e.g. salon`,
  });

const trustDomain = z.string().refine((text) => isDnsName(text) && text === text.toLowerCase(), {
  message: 'must be a lower-case DNS name, e.g. cluster.local',
});

const port = z.int().min(1).max(65_535);

/** A caller: the ingress Envoy, or another mesh service by its name. */
const caller = z.union([z.literal('ingress'), serviceName]);

/** One rule: these callers may send these methods (any when absent) to these paths (any when absent). */
const allowRule = z.strictObject({
  from: z.array(caller).min(1),
  methods: z.array(z.enum(httpMethods)).min(1).optional(),
  paths: z.array(pathString).min(1).optional(),
});

/**
 * One of the service's own routes, decided by its sidecar's ext_authz on the end user the
 * ingress verified (forwarded in the x-sekisho-user-* headers by an allowed workload) and
 * counted by its rate limits. A request matching none of them is decided by `allow` alone.
 */
function meshRoute<Limit extends z.ZodType>(routeLimit: Limit) {
  return z.strictObject({
    /** Part of the rate-limit keys (`<service>:<id>`); default: slug of the match. */
    id: routeId.optional(),
    /** "METHOD /path" or "/prefix/*", as the ingress routes' short form. */
    match: matchString,
    /** Permissions the end user needs, all of them (from the user's group, as the policy defines it). */
    require: z.array(permission).default([]),
    limits: z.array(routeLimit).default([]),
  });
}

function meshService<Limit extends z.ZodType>(routeLimit: Limit) {
  return z.strictObject({
    namespace: kubernetesName('a namespace'),
    /** Default: the service's name. */
    serviceAccount: kubernetesName('a service account').optional(),
    /** Where the app listens on loopback, behind its sidecar. */
    appPort: port,
    /** The sidecar's mTLS listener, in front of the app. */
    inboundPort: port.default(15006),
    /** The sidecar's plaintext loopback listener for the app's calls to other services. */
    outboundPort: port.default(15001),
    /**
     * host:port where peers reach this sidecar's inbound listener; default
     * `<name>.<namespace>.svc.cluster.local:<inboundPort>` (a Kubernetes Service, resolved by DNS).
     */
    address: hostPort.optional(),
    /** Who may call this service; nobody when empty (deny by default). */
    allow: z.array(allowRule).default([]),
    /** The outbound retries of calls to this service through a caller's sidecar; default connection failures, twice. */
    retries: retries.optional(),
    /** Routes checked by ext-authz in the sidecar (the end user's permissions, account, blocks) and rate-limited. */
    routes: z.array(meshRoute(routeLimit)).default([]),
  });
}

/** The route limit schema lives with the other limits (schema.ts); it is passed in to keep one copy. */
export function meshSchema<Limit extends z.ZodType>(routeLimit: Limit) {
  return z.strictObject({
    trustDomain: trustDomain.default('cluster.local'),
    /** The ingress Envoy's workload identity: what `from: [ingress]` means. */
    ingress: z.strictObject({
      namespace: kubernetesName('a namespace'),
      serviceAccount: kubernetesName('a service account'),
    }),
    /** Keyed by the name of a service of `services`. */
    services: z.record(serviceName, meshService(routeLimit)),
  });
}
