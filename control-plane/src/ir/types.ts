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
  requestBody: RequestBodyIR;
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
  /** Resolved: the route's own limit or the gateway-wide default. */
  maxRequestBodyBytes: number;
}
