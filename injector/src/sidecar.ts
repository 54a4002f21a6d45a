import {
  iptablesContainerName,
  proxyContainerName,
  proxyTmpVolume,
  proxyXdsSdsVolume,
  proxyXdsSecretName,
  proxyXdsTlsVolume,
  spiffeCsiDriver,
  xdsClientSdsAnnotation,
} from './annotations';
import { sidecarBootstrap, type XdsTrust, xdsClientSds, xdsClientSdsFile } from './bootstrap';
import type { InjectorConfig } from './config';
import type { Workload } from './workload';

// What the injector adds to a pod: the Envoy container (native sidecar or plain container),
// optionally the iptables init container, and a small writable /tmp. Pure.

/** Envoy's uid in the official image; the iptables rules let its own traffic out unredirected. */
export const proxyUid = 101;

export interface SidecarParts {
  /** Init containers to put first, in this order. */
  initContainers: Record<string, unknown>[];
  /** Containers to append (the plain-container mode). */
  containers: Record<string, unknown>[];
  volumes: Record<string, unknown>[];
  /** Annotations to set on the pod. */
  annotations: Record<string, string>;
}

/**
 * The control channel certificate's volume. csi: a per-pod csi-driver-spiffe volume (the
 * driver writes tls.crt, tls.key, mode 0440, and renews them before expiry); its files are
 * group-owned by the proxy's gid so Envoy (uid/gid 101) can read them. secret: the Secret
 * sekisho-xds-<service>, not optional, so a pod whose Secret is missing waits in
 * ContainerCreating (an event names the Secret) instead of running an unconnected proxy.
 */
function xdsTlsVolume(workload: Workload): Record<string, unknown> {
  if (workload.xdsIdentity === 'secret')
    return { name: proxyXdsTlsVolume, secret: { secretName: proxyXdsSecretName(workload.service) } };
  return {
    name: proxyXdsTlsVolume,
    csi: {
      driver: spiffeCsiDriver,
      readOnly: true,
      volumeAttributes: { 'spiffe.csi.cert-manager.io/fs-group': String(proxyUid) },
    },
  };
}

export function sidecarParts(workload: Workload, config: InjectorConfig, trust: XdsTrust = {}): SidecarParts {
  const proxy = proxyContainer(workload, config, trust);
  const native = config.INJECTOR_SIDECAR_MODE === 'native';
  const initContainers: Record<string, unknown>[] = [];
  if (workload.traffic === 'iptables') initContainers.push(iptablesContainer(workload, config));
  if (native) initContainers.push({ ...proxy, restartPolicy: 'Always' });
  return {
    initContainers,
    containers: native ? [] : [proxy],
    volumes: [
      { name: proxyTmpVolume, emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
      xdsTlsVolume(workload),
      // The file-based SDS resource of that certificate, from the pod's own annotation.
      {
        name: proxyXdsSdsVolume,
        downwardAPI: {
          items: [
            { path: xdsClientSdsFile, fieldRef: { fieldPath: `metadata.annotations['${xdsClientSdsAnnotation}']` } },
          ],
        },
      },
    ],
    annotations: { [xdsClientSdsAnnotation]: JSON.stringify(xdsClientSds(config)) },
  };
}

function proxyContainer(workload: Workload, config: InjectorConfig, trust: XdsTrust): Record<string, unknown> {
  const health = config.INJECTOR_HEALTH_PORT;
  const probe = (path: string, periodSeconds: number, failureThreshold: number) => ({
    httpGet: { path, port: health },
    periodSeconds,
    timeoutSeconds: 1,
    failureThreshold,
  });
  return {
    name: proxyContainerName,
    image: config.INJECTOR_PROXY_IMAGE,
    imagePullPolicy: 'IfNotPresent',
    // The binary, not the image's entrypoint script (which wants root to switch users).
    command: ['/usr/local/bin/envoy'],
    args: [
      '--config-yaml',
      JSON.stringify(sidecarBootstrap(workload, config, trust)),
      '--log-level',
      workload.logLevel,
      '--disable-hot-restart',
      '--drain-time-s',
      '20',
    ],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ],
    ports: [
      { name: 'sekisho-inbound', containerPort: workload.inboundPort, protocol: 'TCP' },
      { name: 'sekisho-health', containerPort: health, protocol: 'TCP' },
    ],
    resources: workload.resources,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: proxyUid,
      runAsGroup: proxyUid,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    // Up to two initial fetch timeouts (CDS, then LDS) pass before Envoy opens its listeners.
    startupProbe: probe('/healthz/live', 1, Math.ceil((2 * config.INJECTOR_PROXY_INITIAL_FETCH_TIMEOUT) / 1000) + 30),
    livenessProbe: probe('/healthz/live', 10, 3),
    readinessProbe: probe('/healthz/ready', 5, 3),
    volumeMounts: [
      { name: proxyTmpVolume, mountPath: '/tmp' },
      // A whole volume (never subPath), so the kubelet updates renewed files in place.
      { name: proxyXdsTlsVolume, mountPath: config.INJECTOR_PROXY_XDS_TLS_DIR, readOnly: true },
      { name: proxyXdsSdsVolume, mountPath: config.INJECTOR_PROXY_XDS_SDS_DIR, readOnly: true },
    ],
  };
}

/**
 * Redirects the app's inbound port to the sidecar's inbound listener and the pod's outbound
 * TCP (except Envoy's own, loopback and DNS) to the outbound listener. Needs NET_ADMIN and
 * NET_RAW as root: not allowed under Pod Security "restricted" (or "baseline").
 */
function iptablesContainer(workload: Workload, config: InjectorConfig): Record<string, unknown> {
  const script = [
    'set -eu',
    'iptables -t nat -N SEKISHO_INBOUND',
    `iptables -t nat -A SEKISHO_INBOUND -p tcp --dport ${workload.appPort} -j REDIRECT --to-ports ${workload.inboundPort}`,
    'iptables -t nat -A PREROUTING -p tcp -j SEKISHO_INBOUND',
    'iptables -t nat -N SEKISHO_OUTBOUND',
    `iptables -t nat -A SEKISHO_OUTBOUND -m owner --uid-owner ${proxyUid} -j RETURN`,
    'iptables -t nat -A SEKISHO_OUTBOUND -d 127.0.0.1/32 -j RETURN',
    'iptables -t nat -A SEKISHO_OUTBOUND -p tcp --dport 53 -j RETURN',
    `iptables -t nat -A SEKISHO_OUTBOUND -p tcp -j REDIRECT --to-ports ${workload.outboundPort}`,
    'iptables -t nat -A OUTPUT -p tcp -j SEKISHO_OUTBOUND',
  ].join('\n');
  return {
    name: iptablesContainerName,
    image: config.INJECTOR_IPTABLES_IMAGE,
    imagePullPolicy: 'IfNotPresent',
    command: ['sh', '-c', script],
    resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '100m', memory: '32Mi' } },
    securityContext: {
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}
