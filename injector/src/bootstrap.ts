import type { InjectorConfig } from './config';
import { quantityValue } from './quantity';
import type { Workload } from './workload';

// The sidecar's Envoy bootstrap, passed inline (`--config-yaml`) so the injector creates no
// object of its own (sideEffects: None). Like envoy/bootstrap.yaml, the proxy knows only who
// it is and where the control plane is; everything else arrives over ADS. `$(POD_NAME)` and
// `$(POD_NAMESPACE)` are expanded by the kubelet from the container's downward-API env.
//
// The identity contract with the control plane (see injector/README.md):
//   node.id       <pod>.<namespace>                      unique per pod
//   node.cluster  sidecar:<service>                      the view the proxy asks for
//   node.metadata sekisho.role = sidecar, namespace, service, service_account, spiffe_id,
//                 pod, ports { inbound, outbound, app? }, traffic (explicit | iptables)
// The cluster is a claim; the control plane serves it only to a client certificate that names
// the service's workload (control-plane/src/channel/identity.ts), presented over mutual TLS from
// the files of INJECTOR_PROXY_XDS_TLS_DIR: in csi mode the pod's csi-driver-spiffe certificate
// spiffe://<mesh trust domain>/ns/<namespace>/sa/<service account> (mesh CA), in secret mode
// spiffe://<control channel trust domain>/sidecar/<service> (control channel CA).

export const xdsClusterName = 'sekisho_xds';
const adminClusterName = 'sekisho_proxy_admin';

export function nodeCluster(workload: Pick<Workload, 'service'>): string {
  return `sidecar:${workload.service}`;
}

/** The file the downwardAPI volume (on INJECTOR_PROXY_XDS_SDS_DIR) puts the SDS resource (xdsClientSds) in. */
export const xdsClientSdsFile = 'xds-client-sds.json';
const xdsClientSecretName = 'sekisho_xds_client';

/**
 * The file-based SDS resource (a DiscoveryResponse, JSON) of the sidecar's control channel
 * certificate: the pair in INJECTOR_PROXY_XDS_TLS_DIR, re-read when that directory's `..data`
 * link is swapped (csi-driver-spiffe and the kubelet both write volumes with Kubernetes' atomic
 * writer), so a renewed certificate is used for new connections with no restart.
 */
export function xdsClientSds(config: InjectorConfig): Record<string, unknown> {
  const dir = config.INJECTOR_PROXY_XDS_TLS_DIR;
  return {
    resources: [
      {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
        name: xdsClientSecretName,
        tls_certificate: {
          certificate_chain: { filename: `${dir}/tls.crt` },
          private_key: { filename: `${dir}/tls.key` },
          watched_directory: { path: dir },
        },
      },
    ],
  };
}

/** What the sidecar's trust in the control plane comes from, besides the configuration. */
export interface XdsTrust {
  /** csi mode: the control channel CA's PEM (INJECTOR_XDS_CA_FILE), inline in the bootstrap. */
  caPem?: string;
}

/**
 * The xds cluster's transport socket: mutual TLS, the client certificate over file-based SDS
 * (xdsClientSds), the control plane's certificate checked against the control channel CA: inline
 * in csi mode, the Secret's ca.crt (read at start) in secret mode.
 */
function xdsTransportSocket(workload: Workload, config: InjectorConfig, host: string, trust: XdsTrust) {
  const dir = config.INJECTOR_PROXY_XDS_TLS_DIR;
  const serverName = config.INJECTOR_XDS_SERVER_NAME ?? host;
  let trustedCa: Record<string, string>;
  if (workload.xdsIdentity === 'secret') trustedCa = { filename: `${dir}/ca.crt` };
  else if (trust.caPem) trustedCa = { inline_string: trust.caPem };
  else throw new Error('csi mode needs the control channel CA (INJECTOR_XDS_CA_FILE)');
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      sni: serverName,
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2' },
        alpn_protocols: ['h2'],
        tls_certificate_sds_secret_configs: [
          {
            name: xdsClientSecretName,
            sds_config: {
              resource_api_version: 'V3',
              // The file itself is re-read when its downwardAPI volume is swapped (the kubelet's
              // atomic writer); the pair it names, when their mount is (its watched_directory).
              path_config_source: {
                path: `${config.INJECTOR_PROXY_XDS_SDS_DIR}/${xdsClientSdsFile}`,
                watched_directory: { path: config.INJECTOR_PROXY_XDS_SDS_DIR },
              },
            },
          },
        ],
        validation_context: {
          trusted_ca: trustedCa,
          match_typed_subject_alt_names: [
            { san_type: 'DNS', matcher: { exact: serverName } },
            { san_type: 'IP_ADDRESS', matcher: { exact: serverName } },
          ],
        },
      },
    },
  };
}

export function sidecarBootstrap(
  workload: Workload,
  config: InjectorConfig,
  trust: XdsTrust = {},
): Record<string, unknown> {
  const [xdsHost, xdsPort] = splitHostPort(config.INJECTOR_XDS_ADDRESS);
  const fetchTimeout = `${config.INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT / 1000}s`;
  const memoryLimit = quantityValue(workload.resources.limits.memory) ?? 256 * 2 ** 20;
  return {
    node: {
      id: '$(POD_NAME).$(POD_NAMESPACE)',
      cluster: nodeCluster(workload),
      metadata: {
        'sekisho.role': 'sidecar',
        namespace: workload.namespace,
        service: workload.service,
        service_account: workload.serviceAccount,
        spiffe_id: workload.spiffeId,
        pod: '$(POD_NAME)',
        traffic: workload.traffic,
        ports: {
          inbound: workload.inboundPort,
          outbound: workload.outboundPort,
          ...(workload.appPort === undefined ? {} : { app: workload.appPort }),
        },
      },
    },
    // Loopback only: the admin endpoint can stop the proxy and dump its config.
    admin: { address: socket('127.0.0.1', config.INJECTOR_PROXY_ADMIN_PORT) },
    dynamic_resources: {
      ads_config: {
        api_type: 'GRPC',
        transport_api_version: 'V3',
        set_node_on_first_message_only: true,
        grpc_services: [{ envoy_grpc: { cluster_name: xdsClusterName } }],
      },
      cds_config: { ads: {}, resource_api_version: 'V3', initial_fetch_timeout: fetchTimeout },
      lds_config: { ads: {}, resource_api_version: 'V3', initial_fetch_timeout: fetchTimeout },
    },
    static_resources: {
      listeners: [healthListener(config.INJECTOR_HEALTH_PORT)],
      clusters: [
        {
          name: xdsClusterName,
          type: 'STRICT_DNS',
          dns_lookup_family: 'V4_PREFERRED',
          connect_timeout: '1s',
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: {
                http2_protocol_options: { connection_keepalive: { interval: '30s', timeout: '5s' } },
              },
            },
          },
          upstream_connection_options: { tcp_keepalive: {} },
          transport_socket: xdsTransportSocket(workload, config, xdsHost, trust),
          load_assignment: {
            cluster_name: xdsClusterName,
            endpoints: [{ lb_endpoints: [{ endpoint: { address: socket(xdsHost, xdsPort) } }] }],
          },
        },
        {
          name: adminClusterName,
          type: 'STATIC',
          connect_timeout: '1s',
          load_assignment: {
            cluster_name: adminClusterName,
            endpoints: [
              { lb_endpoints: [{ endpoint: { address: socket('127.0.0.1', config.INJECTOR_PROXY_ADMIN_PORT) } }] },
            ],
          },
        },
      ],
    },
    // Bound the heap below the container's memory limit, so Envoy sheds load before the OOM killer.
    overload_manager: {
      refresh_interval: '0.25s',
      resource_monitors: [
        {
          name: 'envoy.resource_monitors.fixed_heap',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig',
            max_heap_size_bytes: Math.floor(memoryLimit * 0.8),
          },
        },
      ],
      actions: [
        {
          name: 'envoy.overload_actions.shrink_heap',
          triggers: [{ name: 'envoy.resource_monitors.fixed_heap', threshold: { value: 0.95 } }],
        },
        {
          name: 'envoy.overload_actions.stop_accepting_requests',
          triggers: [{ name: 'envoy.resource_monitors.fixed_heap', threshold: { value: 0.98 } }],
        },
      ],
    },
  };
}

/**
 * The kubelet's probes come from the node, not loopback, so they cannot reach the admin port.
 * This listener answers exactly three paths: /healthz/live (Envoy's workers answer),
 * /healthz/ready (the admin's /ready) and /stats/prometheus (the admin's, for the PodMonitor). Envoy opens listeners only once initialised (the first
 * CDS and LDS answers, or their initial fetch timeouts), so the startup probe allows for that.
 */
function healthListener(port: number) {
  return {
    name: 'sekisho_health',
    address: socket('0.0.0.0', port),
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type':
                'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'sekisho_health',
              route_config: {
                name: 'sekisho_health',
                virtual_hosts: [
                  {
                    name: 'health',
                    domains: ['*'],
                    routes: [
                      {
                        match: { path: '/healthz/ready' },
                        route: { cluster: adminClusterName, prefix_rewrite: '/ready', timeout: '1s' },
                      },
                      {
                        match: { path: '/stats/prometheus' },
                        route: { cluster: adminClusterName, timeout: '5s' },
                      },
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
  };
}

function socket(address: string, port: number) {
  return { socket_address: { address, port_value: port } };
}

function splitHostPort(value: string): [string, number] {
  const at = value.lastIndexOf(':');
  return [value.slice(0, at).replace(/^\[|\]$/g, ''), Number(value.slice(at + 1))];
}
