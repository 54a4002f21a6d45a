// The services of the gateway definition (the upstream clusters) and the resilience settings
// shared with the policy services: health checks, outlier detection, circuit breakers.
// Only what the definition sets is sent; Envoy's defaults apply to the rest.
import { z } from 'zod';
import { isDnsName } from './endpoint';
import { duration, hostPort, urlPath } from './fields';

const percent = z.int().min(0).max(100);
const count = z.int().min(1).max(4_294_967_295);

/** Active health checks (Envoy probes every endpoint and stops sending to failing ones). */
const healthCheckTiming = {
  interval: duration.default('5s'),
  timeout: duration.default('1s'),
  /** Failed probes in a row before an endpoint is taken out. */
  unhealthyThreshold: z.int().min(1).max(100).default(2),
  /** Passed probes in a row before it is put back. */
  healthyThreshold: z.int().min(1).max(100).default(1),
};

export const httpHealthCheck = z.union([
  urlPath,
  z.strictObject({
    path: urlPath,
    ...healthCheckTiming,
    /** Status codes counted as healthy; default 200 only (Envoy's default). */
    expectedStatuses: z.array(z.int().min(100).max(599)).min(1).optional(),
  }),
]);

/** gRPC health checks (grpc.health.v1.Health/Check) for the policy services. */
export const grpcHealthCheck = z.union([
  z.strictObject({ ...healthCheckTiming }),
  // A boolean (not a literal) so that a mistyped settings object is reported field by field.
  z
    .boolean()
    .refine((value) => value === false, { message: 'health checks are on by default: give their settings or false' }),
]);

const enforcing = z.strictObject({
  consecutive5xx: percent.optional(),
  consecutiveGatewayFailure: percent.optional(),
  consecutiveLocalOriginFailure: percent.optional(),
  successRate: percent.optional(),
  localOriginSuccessRate: percent.optional(),
  failurePercentage: percent.optional(),
  failurePercentageLocalOrigin: percent.optional(),
});

/**
 * Passive health (Envoy's outlier detection): an endpoint that keeps failing is ejected for
 * a while. This is also the reference's circuit breaker ("failure threshold 3, recovery 30s"
 * = consecutive5xx: 3, baseEjectionTime: 30s).
 */
export const outlierDetection = z.strictObject({
  consecutive5xx: count.optional(),
  consecutiveGatewayFailure: count.optional(),
  /** Connection failures, timeouts, resets: counted apart from the service's own 5xx. */
  consecutiveLocalOriginFailure: count.optional(),
  interval: duration.optional(),
  baseEjectionTime: duration.optional(),
  maxEjectionTime: duration.optional(),
  maxEjectionPercent: percent.optional(),
  successRate: z
    .strictObject({
      minimumHosts: count.optional(),
      requestVolume: count.optional(),
      /** Ejects below mean - stdevFactor/1000 × stdev (Envoy: 1900 = 1.9). */
      stdevFactor: count.optional(),
    })
    .optional(),
  failurePercentage: z
    .strictObject({
      /** Ejects an endpoint whose failure percentage is at or above this. */
      threshold: percent,
      minimumHosts: count.optional(),
      requestVolume: count.optional(),
    })
    .optional(),
  /** How often (percent) a detected outlier is really ejected, per kind. */
  enforcing: enforcing.optional(),
});

export const circuitBreakers = z
  .strictObject({
    maxConnections: count.optional(),
    maxPendingRequests: count.optional(),
    maxRequests: count.optional(),
    maxRetries: count.optional(),
    /** Retries allowed as a share of active requests (replaces maxRetries). */
    retryBudget: z
      .strictObject({
        percent: z.number().min(0).max(100),
        /** Retries always allowed, whatever the share. */
        minRetryConcurrency: z.int().min(0).default(3),
      })
      .optional(),
  })
  .superRefine((value, ctx) => {
    if (value.maxRetries !== undefined && value.retryBudget !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['retryBudget'], message: 'replaces maxRetries; set one of them' });
    }
  });

const hashOn = z.union([
  z.literal('sourceIp'),
  z.strictObject({ header: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, { message: 'a lower-case header name' }) }),
]);

const loadBalancing = z
  .strictObject({
    policy: z.enum(['roundRobin', 'leastRequest', 'random', 'ringHash', 'maglev']),
    /** What ringHash and maglev hash on, so one client keeps reaching the same endpoint. */
    hashOn: hashOn.optional(),
  })
  .superRefine((value, ctx) => {
    const hashing = value.policy === 'ringHash' || value.policy === 'maglev';
    if (hashing && value.hashOn === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['hashOn'],
        message: `${value.policy} needs hashOn (sourceIp or a header)`,
      });
    } else if (!hashing && value.hashOn !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['hashOn'], message: 'only ringHash and maglev hash' });
    }
  });

const filePath = z
  .string()
  .min(1)
  .regex(/^[^\0]+$/, { message: 'must be a file path' });

/** TLS to the service: the certificate is verified against caFile and the name `sni`. */
const upstreamTls = z
  .strictObject({
    /** Server name sent and verified; default: the endpoint's DNS name. */
    sni: z.string().refine(isDnsName, { message: 'must be a DNS name, e.g. customer.internal' }).optional(),
    caFile: filePath,
    /** Client certificate (mutual TLS), with its key. */
    certFile: filePath.optional(),
    keyFile: filePath.optional(),
  })
  .superRefine((value, ctx) => {
    if ((value.certFile === undefined) !== (value.keyFile === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'certFile and keyFile go together' });
    }
  });

export const serviceSchema = z.strictObject({
  /** host:port; IP literals are served over EDS, DNS names are resolved by Envoy (STRICT_DNS). */
  endpoints: z.array(hostPort).min(1),
  /** How Envoy talks to the service; http2 also suits gRPC services. */
  protocol: z.enum(['http1', 'http2']).default('http1'),
  tls: upstreamTls.optional(),
  /** HTTP health-check path (or settings); no active health check when absent. */
  healthCheck: httpHealthCheck.optional(),
  outlierDetection: outlierDetection.optional(),
  circuitBreakers: circuitBreakers.optional(),
  loadBalancing: loadBalancing.default({ policy: 'roundRobin' }),
  /** Upstream request timeout (the route's timeout unless the route sets one). */
  timeout: duration.default('15s'),
  connectTimeout: duration.default('1s'),
  /** Host header the service receives; default its first endpoint's host ("customer-service"). */
  host: z
    .string()
    .regex(/^[A-Za-z0-9.-]+(?::\d{1,5})?$/, { message: 'must be a host name, e.g. customer.internal' })
    .optional(),
  /** Forward the caller's Authorization header (removed by default once ext-authz verified it). */
  receiveAuthorization: z.boolean().default(false),
});

const policyServiceFields = {
  /** One replica (kept for compatibility); use addresses for several. */
  address: hostPort.optional(),
  addresses: z.array(hostPort).min(1).optional(),
  /** gRPC health checks of every replica; false turns them off. */
  healthCheck: grpcHealthCheck.default({ interval: '5s', timeout: '1s', unhealthyThreshold: 2, healthyThreshold: 1 }),
  outlierDetection: outlierDetection.optional(),
  circuitBreakers: circuitBreakers.optional(),
};

function oneReplicaList(value: { address?: string; addresses?: string[] }, ctx: z.RefinementCtx): void {
  if ((value.address === undefined) === (value.addresses === undefined)) {
    ctx.addIssue({ code: 'custom', message: 'set address (one replica) or addresses (several), one of them' });
  }
  if (value.addresses !== undefined && new Set(value.addresses).size !== value.addresses.length) {
    ctx.addIssue({ code: 'custom', path: ['addresses'], message: 'names a replica twice' });
  }
}

/** ext-authz: gRPC, several replicas, health-checked by default. */
export const extAuthzServiceSchema = z
  .strictObject({ ...policyServiceFields, timeout: duration.default('500ms') })
  .superRefine(oneReplicaList);

export const rateLimitServiceSchema = z
  .strictObject({
    ...policyServiceFields,
    timeout: duration.default('100ms'),
    /** What Envoy does when the rate-limit service cannot answer. */
    failureMode: z.enum(['allow', 'deny']).default('allow'),
    /**
     * What the rate-limit service answers while its Redis cannot: allow, deny, or local (each
     * replica limits in memory, limits divided by localReplicas, known blocks kept). Absent: the
     * service's own RATELIMIT_REDIS_FAILURE_MODE.
     */
    redisFailureMode: z.enum(['allow', 'deny', 'local']).optional(),
    /** local mode: the replicas sharing the traffic; default the number of addresses listed. */
    localReplicas: z.int().min(1).max(1000).optional(),
    /** Honour a request descriptor's `limit` override (Envoy's dynamic limits) instead of the definition's. */
    descriptorLimitOverride: z.boolean().default(false),
    /**
     * Who counts the per-user limits (limits.authenticated, routes' `per: user` limits): the
     * rate-limit service, called by a second ratelimit filter after ext_authz, or ext-authz
     * itself in the Check (one gRPC call per request; ext-authz needs EXT_AUTHZ_REDIS_URL).
     */
    perUserLimits: z.enum(['rate-limit-service', 'ext-authz']).default('rate-limit-service'),
  })
  .superRefine(oneReplicaList);

/** The threat detector's access-log receiver: Envoy streams to it and never waits for it. */
export const threatDetectorServiceSchema = z.strictObject({ ...policyServiceFields }).superRefine(oneReplicaList);
