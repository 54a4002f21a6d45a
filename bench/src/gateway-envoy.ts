// The baselines of bench:gateway as one static Envoy bootstrap with two listeners, both
// routing the benchmark's route to the same demo upstream as the Sekisho stack:
//   envoy_only:   no policy filters at all;
//   envoy_native: Envoy's own jwt_authn (a static JWKS of the dev key), rbac (the token's
//                 group claim) and local_ratelimit (a bucket that never runs out): the checks
//                 Sekisho's ext-authz and rate-limit service make, done in-process.

export interface BaselineBootstrap {
  adminPort: number;
  envoyOnlyPort: number;
  envoyNativePort: number;
  upstreamPort: number;
  path: string;
  rewrite: string;
  projectId: string;
  jwks: string;
  groupClaim: string;
  group: string;
}

export function baselineBootstrap(b: BaselineBootstrap): string {
  const hcm = (name: string, filters: unknown[]) => ({
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
      stat_prefix: name,
      codec_type: 'AUTO',
      route_config: {
        name,
        virtual_hosts: [
          {
            name,
            domains: ['*'],
            routes: [{ match: { path: b.path }, route: { cluster: 'upstream', prefix_rewrite: b.rewrite } }],
          },
        ],
      },
      http_filters: [
        ...filters,
        {
          name: 'envoy.filters.http.router',
          typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' },
        },
      ],
    },
  });
  const listener = (name: string, port: number, filters: unknown[]) => ({
    name,
    address: { socket_address: { address: '127.0.0.1', port_value: port } },
    filter_chains: [{ filters: [hcm(name, filters)] }],
  });
  const percent = (key: string) => ({ runtime_key: key, default_value: { numerator: 100, denominator: 'HUNDRED' } });
  const native = [
    {
      name: 'envoy.filters.http.jwt_authn',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
        providers: {
          firebase: {
            issuer: `https://securetoken.google.com/${b.projectId}`,
            audiences: [b.projectId],
            local_jwks: { inline_string: b.jwks },
            payload_in_metadata: 'jwt_payload',
            forward: false,
          },
        },
        rules: [{ match: { prefix: '/' }, requires: { provider_name: 'firebase' } }],
      },
    },
    {
      name: 'envoy.filters.http.rbac',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC',
        rules: {
          action: 'ALLOW',
          policies: {
            [`${b.group}-reads-profile`]: {
              permissions: [{ url_path: { path: { exact: b.path } } }],
              principals: [
                {
                  metadata: {
                    filter: 'envoy.filters.http.jwt_authn',
                    path: [{ key: 'jwt_payload' }, { key: b.groupClaim }],
                    value: { string_match: { exact: b.group } },
                  },
                },
              ],
            },
          },
        },
      },
    },
    {
      name: 'envoy.filters.http.local_ratelimit',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
        stat_prefix: 'native_ratelimit',
        token_bucket: { max_tokens: 1_000_000_000, tokens_per_fill: 1_000_000_000, fill_interval: '60s' },
        filter_enabled: percent('native_ratelimit.enabled'),
        filter_enforced: percent('native_ratelimit.enforced'),
      },
    },
  ];
  const bootstrap = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: b.adminPort } } },
    static_resources: {
      listeners: [listener('envoy_only', b.envoyOnlyPort, []), listener('envoy_native', b.envoyNativePort, native)],
      clusters: [
        {
          name: 'upstream',
          type: 'STATIC',
          connect_timeout: '1s',
          load_assignment: {
            cluster_name: 'upstream',
            endpoints: [
              {
                lb_endpoints: [
                  { endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: b.upstreamPort } } } },
                ],
              },
            ],
          },
        },
      ],
    },
  };
  // JSON is YAML: Envoy reads the file either way.
  return `${JSON.stringify(bootstrap, null, 2)}\n`;
}
