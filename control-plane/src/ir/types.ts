// The gateway IR: plain data, normalised and cross-checked, that the translators turn into
// Envoy and policy resources. Everything is resolved here (cluster names, inherited
// permissions, durations in ms or s) so translators only map shapes.

import type { ThreatRules } from '@sekisho/service-kit/threat-contract';

export interface GatewayIR {
  /** The plain-HTTP listener (always there). */
  listener: ListenerIR;
  /** The TLS listener, when the definition has listeners.https: what is only for HTTPS (HSTS) reads this. */
  https: HttpsListenerIR | undefined;
  identity: IdentityIR;
  extAuthz: PolicyServiceIR;
  rateLimit: RateLimitServiceIR;
  /** Every upstream cluster (services and policy services), sorted by name. */
  clusters: ClusterIR[];
  limits: GlobalLimitsIR;
  /** In declared order: Envoy takes the first matching route. */
  routes: RouteIR[];
  /** What the ingress does for browsers on every route (ir/browser.ts). */
  browser: BrowserIR;
  clientAddress: ClientAddressIR;
  ipRules: IpRulesIR;
  requestHeaders: RequestHeadersIR;
  requestBody: RequestBodyIR;
  /** Threat detection: the ingress streams its access log to the detector; undefined = off. */
  threats: ThreatsIR | undefined;
  /** The services behind Sekisho sidecars (ir/mesh.ts); undefined = no mesh. */
  mesh?: MeshIR | undefined;
}

export interface MeshIR {
  trustDomain: string;
  /** The ingress Envoy's SPIFFE id (its certificate towards the sidecars). */
  ingressSpiffeId: string;
  /** Sorted by name. */
  services: MeshServiceIR[];
}

export interface MeshServiceIR {
  /** The name in `services` and `mesh.services`; its view is `sidecar:<name>`. */
  name: string;
  spiffeId: string;
  namespace: string;
  appPort: number;
  inboundPort: number;
  outboundPort: number;
  /**
   * The service's cluster as the ingress and callers' sidecars reach it: its one endpoint is
   * where peers reach the sidecar's inbound listener (mesh.services.<name>.address), mesh mTLS.
   */
  cluster: ClusterIR;
  /** Upstream timeout of calls to it (services.<name>.timeout). */
  timeoutMs: number;
  /** Outbound retries of calls to it. */
  retries: RetryIR;
  /** Who may call it; nobody when empty. */
  allow: MeshAllowIR[];
  /** Its own routes, decided by ext-authz in its sidecar; empty = allow rules only (no ext_authz). */
  routes: MeshRouteIR[];
}

/** A mesh service's route: the end user's required permissions and limits, checked in its sidecar. */
export interface MeshRouteIR {
  /** `<service>:<route id>`: never equal to an ingress route id (":" is not allowed in those). */
  id: string;
  /** Empty = any method. */
  methods: string[];
  path: { kind: 'exact' | 'prefix'; value: string };
  /** All of them are needed; empty = any caller the allow rules let in, with or without an end user. */
  permissions: string[];
  limits: LimitIR[];
}

export interface MeshAllowIR {
  /** The callers' SPIFFE ids (the ingress's or mesh services'). */
  principals: string[];
  /** The caller names as the definition gives them ('ingress' or service names). */
  callers: string[];
  /** Empty = any method. */
  methods: string[];
  /** Empty = any path. */
  paths: Array<{ kind: 'exact' | 'prefix'; value: string }>;
}

export interface ThreatsIR {
  clusterName: string;
  /** Envoy's buffer_flush_interval for the gRPC access log. */
  flushIntervalMs: number;
  /** Sent to the detector in every entry (the sekisho.threat_rules custom tag). */
  rules: ThreatRules;
}

export interface CidrIR {
  address: string;
  prefixLen: number;
}

export interface ClientAddressIR {
  /** Peers whose X-Forwarded-For is believed (presets expanded); empty = none. */
  trustedProxies: CidrIR[];
}

export interface IpRulesIR {
  /** VIP clients: never geo-blocked, not counted by the anonymous per-IP limits. */
  allow: CidrIR[];
  deny: CidrIR[];
  /** Undefined = no geo-blocking. Countries upper-case, header lower-case. */
  geoBlock: { countries: string[]; countryHeader: string } | undefined;
}

export interface RequestHeadersIR {
  /** Lower-case names removed from every client request. */
  strip: string[];
  maxCount: number;
  maxSizeKb: number;
}

export interface RequestBodyIR {
  /** The gateway-wide limit; a route's own limit is in RouteIR.maxRequestBodyBytes. */
  defaultMaxBytes: number;
}

export interface ListenerIR {
  name: string;
  /** The RouteConfiguration the listener's HTTP connection manager asks for over RDS. */
  routeConfigName: string;
  address: string;
  port: number;
  /** Set when plain HTTP answers 308 to the https listener (except the exempt paths). */
  httpsRedirect: HttpsRedirectIR | undefined;
}

export interface HttpsRedirectIR {
  /** The https listener's port, put in the Location. */
  httpsPort: number;
  /** The plain-HTTP listener's RouteConfiguration: the routes for the exempt paths, then the redirect. */
  routeConfigName: string;
  /** Paths still routed on plain HTTP, in the definition's order. */
  exempt: Array<{ kind: 'exact' | 'prefix'; value: string }>;
}

export interface HttpsListenerIR {
  name: string;
  /** The same RouteConfiguration as the plain-HTTP listener's (when that one does not redirect). */
  routeConfigName: string;
  address: string;
  port: number;
  /** In the definition's order; each is one SDS Secret. */
  certificates: CertificateIR[];
  /** The Secret of clients without SNI or with a name no certificate lists. */
  defaultSecretName: string;
}

export interface CertificateIR {
  /** Name of the SDS Secret the listener's TLS context asks for. */
  secretName: string;
  /** SNI names this certificate is selected by; empty for the default certificate. */
  serverNames: string[];
  /** Absolute paths, watched for rotation. */
  certFile: string;
  keyFile: string;
  /** The files' PEM text, checked: the chain parses and the key belongs to its first certificate. */
  certificateChainPem: string;
  privateKeyPem: string;
}

export interface IdentityIR {
  firebaseProjectId: string;
  groupClaim: string;
  defaultGroup: string | undefined;
  /** Sorted by name; permissions with inheritance applied, parents' first. */
  groups: GroupIR[];
  /** Accepted sign-in providers; undefined = every provider except anonymous. */
  signInProviders: string[] | undefined;
  /** Accepted tenant ids; empty = tenant tokens are refused. */
  tenants: string[];
  /** The claim holding the caller's customer id ("sub" = the uid); undefined = none configured. */
  customerIdClaim: string | undefined;
}

export interface GroupIR {
  name: string;
  permissions: string[];
}

export interface PolicyServiceIR {
  clusterName: string;
  timeoutMs: number;
}

export interface RateLimitServiceIR extends PolicyServiceIR {
  failureMode: 'allow' | 'deny';
  /** The rate-limit service's answer while Redis cannot; undefined = the service's own setting. */
  redisFailureMode?: 'allow' | 'deny' | 'local';
  /** local mode's expected replica count; undefined = the service's own setting. */
  localReplicas?: number;
  descriptorLimitOverride: boolean;
  /** Who counts the per-user (afterAuth) families: Envoy's second ratelimit filter, or ext-authz's Check. */
  perUserLimits: 'rate-limit-service' | 'ext-authz';
}

export interface EndpointIR {
  host: string;
  port: number;
}

export interface ClusterIR {
  name: string;
  /**
   * `eds`: every endpoint is an IP literal (localhost becomes 127.0.0.1) and is served as a
   * ClusterLoadAssignment over ADS. `dns`: STRICT_DNS with the endpoints inline.
   */
  discovery: 'eds' | 'dns';
  endpoints: EndpointIR[];
  connectTimeoutMs: number;
  protocol: 'http1' | 'http2';
  tls: UpstreamTlsIR | undefined;
  healthCheck: HealthCheckIR | undefined;
  outlierDetection: OutlierDetectionIR | undefined;
  circuitBreakers: CircuitBreakersIR | undefined;
  loadBalancing: LoadBalancingIR;
  /** A mesh service's cluster: mutual TLS with the mesh's SDS secrets, the peer's SPIFFE id required. */
  meshPeer?: string | undefined;
}

export interface UpstreamTlsIR {
  /** Sent as SNI and required in the certificate's subject alternative names. */
  sni: string;
  caFile: string;
  clientCertificate: { certFile: string; keyFile: string } | undefined;
}

export interface HealthCheckIR {
  /** `http`: GET path; `grpc`: grpc.health.v1.Health/Check. */
  kind: 'http' | 'grpc';
  path: string | undefined;
  intervalMs: number;
  timeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /** Healthy status codes (http only); empty = Envoy's default, 200. */
  expectedStatuses: number[];
}

/** Only what the definition sets; Envoy's defaults apply to the rest. */
export interface OutlierDetectionIR {
  consecutive5xx?: number;
  consecutiveGatewayFailure?: number;
  consecutiveLocalOriginFailure?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionTimeMs?: number;
  maxEjectionPercent?: number;
  successRateMinimumHosts?: number;
  successRateRequestVolume?: number;
  successRateStdevFactor?: number;
  failurePercentageThreshold?: number;
  failurePercentageMinimumHosts?: number;
  failurePercentageRequestVolume?: number;
  enforcingConsecutive5xx?: number;
  enforcingConsecutiveGatewayFailure?: number;
  enforcingConsecutiveLocalOriginFailure?: number;
  enforcingSuccessRate?: number;
  enforcingLocalOriginSuccessRate?: number;
  enforcingFailurePercentage?: number;
  enforcingFailurePercentageLocalOrigin?: number;
}

/** Envoy's default-priority thresholds; unset ones keep Envoy's defaults (1024, 1024, 1024, 3). */
export interface CircuitBreakersIR {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxRequests?: number;
  maxRetries?: number;
  retryBudget?: { percent: number; minRetryConcurrency: number };
}

export interface LoadBalancingIR {
  policy: 'roundRobin' | 'leastRequest' | 'random' | 'ringHash' | 'maglev';
  /** ringHash and maglev: what the routes to this cluster hash on. */
  hashOn: 'sourceIp' | { header: string } | undefined;
}

export interface LimitIR {
  per: 'user' | 'ip';
  requestsPerWindow: number;
  windowSeconds: number;
  /** 0 = no blocking beyond the window. */
  blockSeconds: number;
  algorithm: 'fixed' | 'sliding' | 'tokenBucket';
  /** tokenBucket: the bucket's size (the limit when the definition gives none); otherwise 0. */
  burst: number;
  /** Resolved: the limit's own `shadow`, else the definition's `limits.shadow`. */
  shadow: boolean;
}

export interface GlobalLimitsIR {
  /** Per verified user, on every route. */
  authenticated: LimitIR[];
  /** Per client IP for requests without a verified user, on every route. */
  unauthenticated: LimitIR[];
}

export interface RouteIR {
  id: string;
  /** Empty = any method. */
  methods: string[];
  path: PathMatchIR;
  headers: ValueMatchIR[];
  query: ValueMatchIR[];
  action: ForwardIR | DirectResponseIR | RedirectIR;
  responseHeaders: HeaderChangesIR;
  auth: 'required' | 'optional' | 'none';
  /** All of them are needed; empty = any verified caller (or anyone when auth is none). */
  permissions: string[];
  /** What must equal the caller's customer id; undefined = no ownership check. */
  owner: OwnerIR | undefined;
  /** Policy denials of verified callers are reported but let through (never on auth: none). */
  dryRun: boolean;
  limits: LimitIR[];
  /** edge.cors with this route's override applied; undefined = no CORS on this route. */
  cors: CorsIR | undefined;
  /** What this route changes in the gateway's security headers; undefined = nothing. */
  securityHeaders: HeaderOverrideIR | undefined;
  /** Resolved: the route's own limit or the gateway-wide default. */
  maxRequestBodyBytes: number;
}

export interface BrowserIR {
  /** Sent on every response (Envoy's own replies too), in this order. */
  securityHeaders: ResponseHeaderIR[];
  /** The Strict-Transport-Security value, for TLS listeners only; undefined = never sent. */
  strictTransportSecurity: string | undefined;
  csrf: CsrfIR | undefined;
  compression: CompressionIR | undefined;
}

export interface ResponseHeaderIR {
  /** Lower case. */
  name: string;
  value: string;
}

export interface HeaderOverrideIR {
  set: ResponseHeaderIR[];
  remove: string[];
}

/** An allowed browser origin; `anyLabel` = "scheme://*.host": exactly one more DNS label. */
export interface OriginIR {
  scheme: 'http' | 'https';
  anyLabel: boolean;
  host: string;
  port: number | undefined;
}

export interface CorsIR {
  allowOrigins: OriginIR[];
  allowMethods: string[];
  /** Lower case. */
  allowHeaders: string[];
  /** Lower case. */
  exposeHeaders: string[];
  allowCredentials: boolean;
  maxAgeSeconds: number;
}

export interface CsrfIR {
  /** Besides the request's own host: every CORS origin and csrf.additionalOrigins. */
  trustedOrigins: OriginIR[];
}

export interface CompressionIR {
  minLength: number;
  /** In order of preference. */
  algorithms: Array<'br' | 'gzip'>;
}

/**
 * The request's value to compare: the path segment at this index (the path split at "/",
 * so "/a/{id}" has the variable at 2), or a query parameter.
 */
export type OwnerIR = { kind: 'pathSegment'; param: string; index: number } | { kind: 'query'; name: string };

export interface PathMatchIR {
  kind: 'exact' | 'prefix' | 'regex' | 'template';
  value: string;
}

export interface ValueMatchIR {
  name: string;
  kind: 'exact' | 'prefix' | 'regex' | 'present';
  /** Empty for `present`. */
  value: string;
  /** Headers only: match when the condition does not hold. */
  invert: boolean;
}

export interface ForwardIR {
  kind: 'forward';
  /** One cluster, or a weighted split (weights as given); `host` is the Host header its service gets. */
  clusters: Array<{ name: string; weight: number; host: string }>;
  /** Only when every target service asks for it; else Authorization ends at the gateway. */
  forwardAuthorization: boolean;
  rewrite: RewriteIR | undefined;
  timeoutMs: number;
  idleTimeoutMs: number | undefined;
  retries: RetryIR;
  requestHeaders: HeaderChangesIR;
  /** From the target cluster's ringHash/maglev load balancing. */
  hashOn: LoadBalancingIR['hashOn'];
}

export type RewriteIR =
  /** Replaces the matched prefix (or the whole exact path). */
  | { kind: 'prefix'; value: string }
  /** A URI template over the match template's variables. */
  | { kind: 'template'; value: string }
  | { kind: 'regex'; regex: string; substitution: string };

export interface RetryIR {
  /** Envoy's retry_on conditions. */
  on: string[];
  count: number;
  statusCodes: number[];
  perTryTimeoutMs: number | undefined;
  perTryIdleTimeoutMs: number | undefined;
  backOff: { baseMs: number; maxMs: number | undefined };
}

export interface HeaderChangesIR {
  add: Array<{ name: string; value: string }>;
  set: Array<{ name: string; value: string }>;
  remove: string[];
}

export interface DirectResponseIR {
  kind: 'direct';
  status: number;
  body: string | undefined;
  contentType: string;
}

export interface RedirectIR {
  kind: 'redirect';
  scheme: 'http' | 'https' | undefined;
  host: string | undefined;
  port: number | undefined;
  path: string | undefined;
  prefixRewrite: string | undefined;
  status: 301 | 302 | 303 | 307 | 308;
  stripQuery: boolean;
}
