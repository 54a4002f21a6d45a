// Envoy's well-known filter names; typed_per_filter_config is keyed by them.
export const httpFilterNames = {
  headerMutation: 'envoy.filters.http.header_mutation',
  extAuthz: 'envoy.filters.http.ext_authz',
  rateLimit: 'envoy.filters.http.ratelimit',
  router: 'envoy.filters.http.router',
  // Several instances of one filter type need names of their own.
  requestHeaderHygiene: 'sekisho.request_header_hygiene',
  ipRules: 'sekisho.ip_rules',
  geoBlock: 'sekisho.geo_block',
} as const;

export const httpConnectionManagerName = 'envoy.filters.network.http_connection_manager';
export const stdoutAccessLogName = 'envoy.access_loggers.stdout';
export const upstreamHttpProtocolOptionsName = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
