import { envDuration, envEnum, envHostPort, envLogLevel, envPort, loadConfig } from '@sekisho/service-kit/config';
import { z } from 'zod';
import { isQuantity } from './quantity';

// Every setting of the injector, parsed and checked in one place at start-up.

const quantity = (defaultValue: string) =>
  z.string().default(defaultValue).refine(isQuantity, 'expected a Kubernetes quantity such as 100m, 1, 128Mi or 1Gi');

const namespaceList = z
  .string()
  .default('kube-system,kube-public,kube-node-lease')
  .transform((value) =>
    value
      .split(',')
      .map((item) => item.trim())
      .filter(Boolean),
  )
  .refine((names) => names.every((name) => dnsLabel.test(name)), 'expected namespace names separated by commas');

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const configSchema = z
  .object({
    INJECTOR_HOST: z.string().min(1).default('127.0.0.1'),
    /** The webhook's HTTPS port (the Service maps 443 to it). */
    INJECTOR_PORT: envPort(9443),
    INJECTOR_ADMIN_PORT: envPort(9103),
    /** PEM files of the webhook's serving certificate (chain) and key; re-read when they change. */
    INJECTOR_TLS_CERT_FILE: z.string({ error: 'required: path of the PEM certificate' }).min(1),
    INJECTOR_TLS_KEY_FILE: z.string({ error: 'required: path of the PEM private key' }).min(1),
    /** How often the files' stat is checked besides fs.watch (which misses some volume updates). */
    INJECTOR_TLS_POLL_INTERVAL: envDuration('2s').refine((ms) => ms >= 100, 'at least 100ms'),
    /** The namespace the control plane (and the injector) run in: never injected. */
    INJECTOR_SYSTEM_NAMESPACE: z.string().regex(dnsLabel, 'expected a namespace name').default('sekisho-system'),
    /** More namespaces never injected, comma-separated; kube-system always is. */
    INJECTOR_EXCLUDED_NAMESPACES: namespaceList,
    /** native: an init container with restartPolicy Always (Kubernetes ≥ 1.29); container: a plain container. */
    INJECTOR_SIDECAR_MODE: envEnum(['native', 'container'], 'native'),
    INJECTOR_PROXY_IMAGE: z.string().min(1).default('envoyproxy/envoy:v1.40.0'),
    /** The control plane's ADS address as the sidecar sees it. */
    INJECTOR_XDS_ADDRESS: envHostPort('sekisho-control-plane.sekisho-system.svc.cluster.local:18000'),
    /**
     * The name the control plane's certificate must carry (DNS or IP SAN); default: the host of
     * INJECTOR_XDS_ADDRESS. The sidecar always speaks mutual TLS to the control plane.
     */
    INJECTOR_XDS_SERVER_NAME: z
      .string()
      .regex(/^[A-Za-z0-9.:-]{1,253}$/, 'expected a DNS name or an IP address')
      .optional(),
    /**
     * Where the sidecar's control channel client certificate comes from: csi (a per-pod
     * certificate spiffe://<trust domain>/ns/<ns>/sa/<sa> from cert-manager's csi-driver-spiffe,
     * renewed by the driver) or secret (the Secret sekisho-xds-<service> the platform team
     * creates). A pod may choose with the annotation sekisho.io/xds-identity.
     */
    INJECTOR_XDS_IDENTITY: envEnum(['csi', 'secret'], 'csi'),
    /**
     * PEM of the control channel CA (what signs the control plane's server certificate): the
     * sidecar's trust anchor in csi mode, put inline in its bootstrap (the CSI volume's ca.crt,
     * if any, is the mesh bundle, not this CA). Re-read when it changes. Required unless
     * INJECTOR_XDS_IDENTITY=secret (then the Secret's ca.crt is the anchor).
     */
    INJECTOR_XDS_CA_FILE: z.string().min(1).optional(),
    /**
     * Where the sidecar reads its control channel files (tls.crt, tls.key; ca.crt in secret
     * mode): the mount path of the CSI volume or of the Secret sekisho-xds-<service>.
     */
    INJECTOR_PROXY_XDS_TLS_DIR: z
      .string()
      .regex(/^\/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$/, 'expected an absolute directory path without a trailing slash')
      .default('/etc/sekisho/xds-tls'),
    /**
     * Where the sidecar finds the file-based SDS resource of its control channel certificate (a
     * downwardAPI volume projecting the pod's annotation sekisho.io/xds-client-sds).
     */
    INJECTOR_PROXY_XDS_SDS_DIR: z
      .string()
      .regex(/^\/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$/, 'expected an absolute directory path without a trailing slash')
      .default('/etc/sekisho/xds-sds'),
    /** The SPIFFE trust domain of the workload identities (spiffe://<domain>/ns/<ns>/sa/<sa>). */
    INJECTOR_TRUST_DOMAIN: z
      .string()
      .regex(/^[a-z0-9._-]{1,255}$/, 'expected a trust domain such as cluster.local')
      .default('cluster.local'),
    INJECTOR_PROXY_CPU_REQUEST: quantity('100m'),
    INJECTOR_PROXY_MEMORY_REQUEST: quantity('128Mi'),
    INJECTOR_PROXY_CPU_LIMIT: quantity('1'),
    INJECTOR_PROXY_MEMORY_LIMIT: quantity('256Mi'),
    /**
     * How long the proxy waits for its first clusters and listeners (each) before it starts
     * anyway. Envoy opens no listener, the health listener included, before that.
     */
    INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT: envDuration('15s').refine(
      (ms) => ms >= 1_000 && ms % 1_000 === 0,
      'whole seconds, at least 1s',
    ),
    INJECTOR_PROXY_LOG_LEVEL: envEnum(['trace', 'debug', 'info', 'warning', 'error', 'critical', 'off'], 'info'),
    INJECTOR_INBOUND_PORT: envPort(15006),
    INJECTOR_OUTBOUND_PORT: envPort(15001),
    INJECTOR_HEALTH_PORT: envPort(15021),
    INJECTOR_PROXY_ADMIN_PORT: envPort(15000),
    /** Lets pods ask for `sekisho.io/traffic: iptables` (an init container with NET_ADMIN; not PSS restricted). */
    INJECTOR_ALLOW_IPTABLES: envEnum(['true', 'false'], 'false').transform((value) => value === 'true'),
    /** The image of that init container: it needs `iptables` and `sh`. */
    INJECTOR_IPTABLES_IMAGE: z.string().min(1).optional(),
    LOG_LEVEL: envLogLevel(),
  })
  .superRefine((config, ctx) => {
    if (config.INJECTOR_XDS_IDENTITY === 'csi' && !config.INJECTOR_XDS_CA_FILE)
      ctx.addIssue({
        code: 'custom',
        path: ['INJECTOR_XDS_CA_FILE'],
        message:
          "required with INJECTOR_XDS_IDENTITY=csi (the default): the control channel CA's PEM, the sidecars' trust anchor for the control plane",
      });
    if (config.INJECTOR_ALLOW_IPTABLES && !config.INJECTOR_IPTABLES_IMAGE)
      ctx.addIssue({
        code: 'custom',
        path: ['INJECTOR_IPTABLES_IMAGE'],
        message: 'required when INJECTOR_ALLOW_IPTABLES=true (an image with sh and iptables)',
      });
    const ports = [
      ['INJECTOR_INBOUND_PORT', config.INJECTOR_INBOUND_PORT],
      ['INJECTOR_OUTBOUND_PORT', config.INJECTOR_OUTBOUND_PORT],
      ['INJECTOR_HEALTH_PORT', config.INJECTOR_HEALTH_PORT],
      ['INJECTOR_PROXY_ADMIN_PORT', config.INJECTOR_PROXY_ADMIN_PORT],
    ] as const;
    for (const [name, port] of ports) {
      if (port === 0) ctx.addIssue({ code: 'custom', path: [name], message: 'must not be 0' });
      const clash = ports.find(([other, p]) => other !== name && p === port);
      if (clash && name < clash[0])
        ctx.addIssue({ code: 'custom', path: [name], message: `equals ${clash[0]}; the sidecar's ports must differ` });
    }
  });

export type InjectorConfig = z.output<typeof configSchema>;

export function loadInjectorConfig(env: NodeJS.ProcessEnv = process.env): InjectorConfig {
  return loadConfig(configSchema, env);
}
