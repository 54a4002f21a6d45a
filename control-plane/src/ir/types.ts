// The gateway IR: plain data, normalised and cross-checked, that the translators turn into
// Envoy and policy resources. Everything is resolved here (cluster names, inherited
// permissions, durations in ms or s) so translators only map shapes.

export interface GatewayIR {
  listener: ListenerIR;
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
}

export interface ListenerIR {
  name: string;
  /** The RouteConfiguration the listener's HTTP connection manager asks for over RDS. */
  routeConfigName: string;
  address: string;
  port: number;
  xffNumTrustedHops: number;
}

export interface IdentityIR {
  firebaseProjectId: string;
  groupClaim: string;
  defaultGroup: string | undefined;
  /** Sorted by name; permissions with inheritance applied, parents' first. */
  groups: GroupIR[];
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
  healthCheckPath: string | undefined;
  outlierDetection: OutlierDetectionIR | undefined;
}

/** Only what the definition sets; Envoy's defaults apply to the rest. */
export interface OutlierDetectionIR {
  consecutive5xx?: number;
  consecutiveGatewayFailure?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionPercent?: number;
}

export interface LimitIR {
  per: 'user' | 'ip';
  requestsPerWindow: number;
  windowSeconds: number;
  /** 0 = no blocking beyond the window. */
  blockSeconds: number;
}

export interface GlobalLimitsIR {
  /** Per verified user, on every route. */
  authenticated: LimitIR[];
  /** Per client IP for requests without a verified user, on every route. */
  unauthenticated: LimitIR[];
}

export interface RouteIR {
  id: string;
  /** Undefined = any method. */
  method: string | undefined;
  path: { kind: 'exact' | 'prefix'; value: string };
  clusterName: string;
  rewrite: string | undefined;
  timeoutMs: number;
  auth: 'required' | 'none';
  /** All of them are needed; empty = any verified caller (or anyone when auth is none). */
  permissions: string[];
  limits: LimitIR[];
  /** edge.cors with this route's override applied; undefined = no CORS on this route. */
  cors: CorsIR | undefined;
  /** What this route changes in the gateway's security headers; undefined = nothing. */
  securityHeaders: HeaderOverrideIR | undefined;
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
