// Names shared by the control plane (which writes them into Envoy's config) and the
// two policy services (which read or write them at run time). One place, so the
// generated config and the services cannot drift apart.

/** Headers ext-authz sets on allowed requests. Envoy strips client-sent copies first. */
export const identityHeaders = {
  userId: 'x-sekisho-user-id',
  email: 'x-sekisho-user-email',
  emailVerified: 'x-sekisho-user-email-verified',
  phone: 'x-sekisho-user-phone',
  group: 'x-sekisho-user-group',
  permissions: 'x-sekisho-user-permissions',
} as const;

export const allIdentityHeaders: readonly string[] = Object.values(identityHeaders);

/**
 * Set by ext-authz on a request it let through only because the route is in dry-run: the
 * error code it would have answered. Like every x-sekisho- header, never taken from a client.
 */
export const dryRunDeniedHeader = 'x-sekisho-dry-run-denied';

/**
 * The ingress's first filter sets this to exactly the client address Envoy derived (the peer,
 * or what a trusted proxy appended), before ext_authz or any upstream sees the request.
 * ext_authz's CheckRequest source address is the socket peer (behind a CDN, the CDN).
 */
export const clientAddressHeader = 'x-forwarded-for';

/** Every header starting with this prefix is Sekisho's and never trusted from a client. */
export const sekishoHeaderPrefix = 'x-sekisho-';

/** Keys of the ext_authz per-route `context_extensions` the control plane sets. */
export const authzContextKeys = {
  routeId: 'sekisho.route_id',
  /** "required", "optional" or "none". Anything else, or absent, is treated as "required". */
  auth: 'sekisho.auth',
  /** Comma-separated permissions, all of which the caller needs. */
  permissions: 'sekisho.permissions',
  /**
   * Envoy's request header limits (entries, bytes): it checks them again after ext_authz
   * applied its headers, and answers an empty 500 when they pushed a request over, so
   * ext-authz answers 431 instead of adding them.
   */
  /**
   * Ownership: the path segment (decimal index into the path split at "/", so "/a/{id}" is 2)
   * or the query parameter whose value must equal the caller's customer id. At most one is
   * set; a route with neither has no ownership check.
   */
  ownerPathSegment: 'sekisho.owner_path_segment',
  ownerQuery: 'sekisho.owner_query',
  /** "true": a verified caller the policy refuses is allowed, marked with dryRunDeniedHeader. */
  dryRun: 'sekisho.dry_run',
  maxRequestHeaders: 'sekisho.max_request_headers',
  maxRequestHeaderBytes: 'sekisho.max_request_header_bytes',
  /**
   * Set only on a sidecar's inbound routes: the mesh's trust domain. Marks a mesh inbound
   * check, decided on the calling workload (source.principal, which must be a SPIFFE id of
   * this trust domain) and the end user it forwards in the identity headers, not on a token.
   * A client cannot claim it: context_extensions come from the control plane only.
   */
  meshTrustDomain: 'sekisho.mesh_trust_domain',
  /**
   * With meshTrustDomain: the longest a request that entered at the ingress can still be
   * under way (its request timeout, seconds). A user signed out everywhere less than this
   * long ago is refused in the mesh, since the forwarded identity carries no token time.
   */
  meshChainSeconds: 'sekisho.mesh_chain_seconds',
  /**
   * Set only when the definition counts the per-user limits in ext-authz's Check
   * (policyServices.rateLimit.perUserLimits: ext-authz): the comma-separated families of
   * userLimitFamilies that apply to the route. ext-authz counts them for the verified user
   * against AuthzPolicy.user_limits, in the same Check, instead of a second call from Envoy.
   */
  userLimits: 'sekisho.user_limits',
} as const;

/**
 * The per-user limit families a route can carry in authzContextKeys.userLimits:
 * "authenticated" = the definition's limits.authenticated (descriptor sekisho_limit=
 * authenticated, user=<uid>); "route" = the route's own per-user limits (descriptor
 * sekisho_route=<route id>, user=<uid>). The same descriptors Envoy would send.
 */
export const userLimitFamilies = ['authenticated', 'route'] as const;
export type UserLimitFamily = (typeof userLimitFamilies)[number];

/**
 * Dynamic metadata ext-authz sets on allowed requests, in the ext_authz filter's
 * namespace: access logs and later filters read it as
 * `%DYNAMIC_METADATA(envoy.filters.http.ext_authz:user_id)%`.
 */
export const authzDynamicMetadataNamespace = 'envoy.filters.http.ext_authz';
export const authzDynamicMetadataKeys = {
  /** The verified uid (absent on `auth: none` routes). */
  userId: 'user_id',
  /** The caller's policy group, when it has one. */
  group: 'group',
  /** On a dry-run route: the error code of the denial that was let through. */
  dryRunDenied: 'dry_run_denied',
  /**
   * "true" on a denial for a token that failed verification (also set on denied responses):
   * the rate-limit filter ahead of ext_authz counts such requests per IP when the stream is
   * done, as it counts requests without a token before asking anyone.
   */
  authenticationFailed: 'authentication_failed',
  /**
   * The verified token's auth_time (seconds, as a decimal string) and its
   * firebase.sign_in_second_factor when it has one: the threat detector's sign-in facts (a new
   * auth_time is a sign-in; a second factor makes its place trusted).
   */
  authTime: 'auth_time',
  secondFactor: 'second_factor',
} as const;

/** The ratelimit filter's domain and the descriptor entry keys the control plane emits. */
export const rateLimitDomain = 'sekisho';
export const descriptorKeys = {
  /** generic_key naming which limit family a descriptor belongs to. */
  limitClass: 'sekisho_limit',
  /** generic_key carrying the route id for per-route limits. */
  route: 'sekisho_route',
  /** request_headers action on identityHeaders.userId. */
  user: 'user',
  /** remote_address action. */
  remoteAddress: 'remote_address',
  /** header_value_match that is present only for requests without a verified user. */
  anonymous: 'anonymous',
  /** metadata action: "ordinary" for every client but the VIP addresses (edge.ipRules.allow). */
  clientClass: 'client_class',
} as const;

/** Policy resources served over ADS to Sekisho's own services. */
export const policyTypeUrls = {
  authz: 'type.googleapis.com/sekisho.policy.v1.AuthzPolicy',
  rateLimit: 'type.googleapis.com/sekisho.policy.v1.RateLimitPolicy',
} as const;

export const policyResourceNames = {
  authz: 'authz',
  rateLimit: 'ratelimit',
} as const;

/**
 * Node metadata key naming the control plane's view a client wants (`ingress`,
 * `sidecar:<service>`, or one of policyViews). A node naming an unknown view gets nothing.
 */
export const nodeViewKey = 'sekisho.view';

/** The control-plane views of the two policy services: each gets its own policy resource only. */
export const policyViews = {
  extAuthz: 'ext-authz',
  rateLimit: 'ratelimit',
} as const;
