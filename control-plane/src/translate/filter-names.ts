// Envoy's well-known filter names; typed_per_filter_config is keyed by them.
export const httpFilterNames = {
  headerMutation: 'envoy.filters.http.header_mutation',
  /** A second header_mutation filter (instance names key typed_per_filter_config). */
  securityHeaders: 'sekisho.security_headers',
  cors: 'envoy.filters.http.cors',
  csrf: 'envoy.filters.http.csrf',
  compressorBrotli: 'envoy.filters.http.compressor.br',
  compressorGzip: 'envoy.filters.http.compressor.gzip',
  buffer: 'envoy.filters.http.buffer',
  extAuthz: 'envoy.filters.http.ext_authz',
  rateLimit: 'envoy.filters.http.ratelimit',
  /** The second ratelimit filter, ahead of ext_authz (its own name: filter names are unique). */
  rateLimitBeforeAuth: 'sekisho.filters.http.ratelimit_before_auth',
  router: 'envoy.filters.http.router',
  // Several instances of one filter type need names of their own.
  requestHeaderHygiene: 'sekisho.request_header_hygiene',
  ipRules: 'sekisho.ip_rules',
  geoBlock: 'sekisho.geo_block',
} as const;

export const httpConnectionManagerName = 'envoy.filters.network.http_connection_manager';
export const stdoutAccessLogName = 'envoy.access_loggers.stdout';
export const grpcAccessLogName = 'envoy.access_loggers.http_grpc';
export const upstreamHttpProtocolOptionsName = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
export const pathMatchUriTemplateName = 'envoy.path.match.uri_template.uri_template_matcher';
export const pathRewriteUriTemplateName = 'envoy.path.rewrite.uri_template.uri_template_rewriter';
export const upstreamTlsTransportSocketName = 'envoy.transport_sockets.tls';
export const tlsTransportSocketName = 'envoy.transport_sockets.tls';
export const tlsInspectorName = 'envoy.filters.listener.tls_inspector';
