import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BOOTSTRAP_TEMPLATE, renderBootstrap } from '@sekisho/devstack/envoy';
import { repoRoot } from '@sekisho/devstack/paths';
import { parse } from 'yaml';

// The ingress Envoy's bootstrap in k8s/ is envoy/bootstrap.yaml filled in with the cluster's
// values plus one static listener for the kubelet's probes and Prometheus: the test renders
// it here and compares, so the two files cannot drift.

export const ingressBootstrapFile = join(repoRoot, 'k8s', 'base', 'ingress', 'bootstrap.yaml');

/** Where the ingress Deployment mounts the sekisho-ingress-xds Secret (cert-manager). */
export const ingressXdsTlsDir = '/etc/sekisho/xds-tls';
const controlPlaneHost = 'sekisho-control-plane.sekisho-system.svc.cluster.local';

export const ingressBootstrapValues = {
  nodeId: 'sekisho-ingress',
  // The cluster the control plane reads as a claim of the ingress view (channel/identity.ts);
  // the certificate (spiffe://sekisho.local/ingress) must allow it.
  cluster: 'sekisho-ingress',
  controlPlane: {
    host: controlPlaneHost,
    port: 18000,
    // Mutual TLS; expectedIngressBootstrap moves the files into the SDS files below.
    tls: {
      caFile: `${ingressXdsTlsDir}/ca.crt`,
      certFile: `${ingressXdsTlsDir}/tls.crt`,
      keyFile: `${ingressXdsTlsDir}/tls.key`,
      serverName: controlPlaneHost,
    },
  },
  adminAddress: '127.0.0.1',
  adminPort: 9901,
  // 80 % of the container's 1 Gi memory limit.
  maxHeapBytes: Math.floor(0.8 * 2 ** 30),
  maxDownstreamConnections: 50_000,
} as const;

/** The probe and metrics listener: /ready and /stats/prometheus of the loopback admin, and /healthz/live. */
export function statsListener(port: number, adminPort: number) {
  const toAdmin = (path: string) => ({ match: { path }, route: { cluster: 'sekisho_admin', timeout: '5s' } });
  return {
    listener: {
      name: 'sekisho_stats',
      address: { socket_address: { address: '0.0.0.0', port_value: port } },
      filter_chains: [
        {
          filters: [
            {
              name: 'envoy.filters.network.http_connection_manager',
              typed_config: {
                '@type':
                  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                stat_prefix: 'sekisho_stats',
                route_config: {
                  name: 'sekisho_stats',
                  virtual_hosts: [
                    {
                      name: 'stats',
                      domains: ['*'],
                      routes: [
                        toAdmin('/ready'),
                        toAdmin('/stats/prometheus'),
                        {
                          match: { path: '/healthz/live' },
                          direct_response: { status: 200, body: { inline_string: 'live\n' } },
                        },
                      ],
                    },
                  ],
                },
                http_filters: [
                  {
                    name: 'envoy.filters.http.router',
                    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' },
                  },
                ],
              },
            },
          ],
        },
      ],
    },
    cluster: {
      name: 'sekisho_admin',
      type: 'STATIC',
      connect_timeout: '1s',
      load_assignment: {
        cluster_name: 'sekisho_admin',
        endpoints: [
          {
            lb_endpoints: [
              { endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: adminPort } } } },
            ],
          },
        ],
      },
    },
  };
}

/**
 * The control channel's certificate and CA over file-based SDS instead of files read once: each
 * SDS file (in the bootstrap ConfigMap, next to bootstrap.yaml) names the mounted Secret's
 * files and watches the Secret's directory, so the kubelet's `..data` swap after a cert-manager
 * renewal makes Envoy load the new pair with no restart.
 */
export const ingressSdsDir = '/etc/envoy';
export const ingressSdsFiles = {
  client: 'xds-client-sds.yaml',
  ca: 'xds-ca-sds.yaml',
} as const;
const secretType = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

/** The two SDS files: name → content (YAML-parsed form). */
export function expectedIngressSdsFiles(): Record<string, Record<string, unknown>> {
  const { tls } = ingressBootstrapValues.controlPlane;
  const watched = { path: ingressXdsTlsDir };
  return {
    [ingressSdsFiles.client]: {
      resources: [
        {
          '@type': secretType,
          name: 'sekisho_xds_client',
          tls_certificate: {
            certificate_chain: { filename: tls.certFile },
            private_key: { filename: tls.keyFile },
            watched_directory: watched,
          },
        },
      ],
    },
    [ingressSdsFiles.ca]: {
      resources: [
        {
          '@type': secretType,
          name: 'sekisho_xds_ca',
          validation_context: { trusted_ca: { filename: tls.caFile }, watched_directory: watched },
        },
      ],
    },
  };
}

const sdsConfig = (file: string) => ({
  resource_api_version: 'V3',
  path_config_source: { path: `${ingressSdsDir}/${file}` },
});

/** What k8s/base/ingress/bootstrap.yaml must parse to. */
export async function expectedIngressBootstrap(): Promise<Record<string, unknown>> {
  const rendered = parse(renderBootstrap(ingressBootstrapValues, await readFile(BOOTSTRAP_TEMPLATE, 'utf8')));
  const { listener, cluster } = statsListener(9902, ingressBootstrapValues.adminPort);
  rendered.static_resources.listeners = [listener];
  rendered.static_resources.clusters.push(cluster);
  // renderBootstrap's TLS context, with the certificate and the CA from SDS files.
  const xds = rendered.static_resources.clusters.find((c: { name: string }) => c.name === 'sekisho_xds');
  const context = xds.transport_socket.typed_config.common_tls_context;
  const { match_typed_subject_alt_names } = context.validation_context;
  delete context.tls_certificates;
  delete context.validation_context;
  context.tls_certificate_sds_secret_configs = [
    { name: 'sekisho_xds_client', sds_config: sdsConfig(ingressSdsFiles.client) },
  ];
  context.combined_validation_context = {
    default_validation_context: { match_typed_subject_alt_names },
    validation_context_sds_secret_config: { name: 'sekisho_xds_ca', sds_config: sdsConfig(ingressSdsFiles.ca) },
  };
  return rendered;
}
