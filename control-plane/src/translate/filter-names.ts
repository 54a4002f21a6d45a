// Envoy's well-known filter names; typed_per_filter_config is keyed by them.
export const httpFilterNames = {
  headerMutation: 'envoy.filters.http.header_mutation',
  buffer: 'envoy.filters.http.buffer',
  extAuthz: 'envoy.filters.http.ext_authz',
  rateLimit: 'envoy.filters.http.ratelimit',
  /** The second ratelimit filter, ahead of ext_authz (its own name: filter names are unique). */
  rateLimitBeforeAuth: 'sekisho.filters.http.ratelimit_before_auth',
  router: 'envoy.filters.http.router',
} as const;

export const httpConnectionManagerName = 'envoy.filters.network.http_connection_manager';
export const stdoutAccessLogName = 'envoy.access_loggers.stdout';
export const upstreamHttpProtocolOptionsName = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
