// The injector's contract with the people who deploy workloads: one namespace label to opt in,
// pod annotations to opt out and to tune the sidecar. Documented in injector/README.md.

/** Namespace label: `enabled` opts every pod of the namespace in (matched by the webhook's namespaceSelector). */
export const namespaceLabel = 'sekisho.io/inject';
/** Pod annotation: `false` opts the pod out. */
export const injectAnnotation = 'sekisho.io/inject';
/** Pod annotation the injector sets: `injected`. */
export const statusAnnotation = 'sekisho.io/status';
/** Pod label the injector sets: `sidecar` (what the sidecars' PodMonitor selects). */
export const proxyLabel = 'sekisho.io/proxy';

export const annotations = {
  service: 'sekisho.io/service',
  appPort: 'sekisho.io/app-port',
  inboundPort: 'sekisho.io/inbound-port',
  outboundPort: 'sekisho.io/outbound-port',
  cpuRequest: 'sekisho.io/proxy-cpu',
  memoryRequest: 'sekisho.io/proxy-memory',
  cpuLimit: 'sekisho.io/proxy-cpu-limit',
  memoryLimit: 'sekisho.io/proxy-memory-limit',
  logLevel: 'sekisho.io/proxy-log-level',
  traffic: 'sekisho.io/traffic',
  xdsIdentity: 'sekisho.io/xds-identity',
} as const;

/**
 * Pod annotation the injector sets: the sidecar's file-based SDS resource for its control
 * channel certificate (JSON), projected into the pod as a file by a downwardAPI volume, so the
 * inline bootstrap can point Envoy's path_config_source at it without a ConfigMap.
 */
export const xdsClientSdsAnnotation = 'sekisho.io/xds-client-sds';

/** Names of what the injector adds; finding one of them in a pod means it is already injected. */
export const proxyContainerName = 'sekisho-proxy';
export const iptablesContainerName = 'sekisho-init-iptables';
export const proxyTmpVolume = 'sekisho-proxy-tmp';
export const proxyXdsTlsVolume = 'sekisho-proxy-xds-tls';
export const proxyXdsSdsVolume = 'sekisho-proxy-xds-sds';

/** cert-manager's csi-driver-spiffe (the CSIDriver its Helm chart installs). */
export const spiffeCsiDriver = 'spiffe.csi.cert-manager.io';

/**
 * Secret mode only (`INJECTOR_XDS_IDENTITY=secret` or the pod annotation
 * `sekisho.io/xds-identity: secret`): the Secret, in the pod's namespace, holding the sidecar's
 * control channel certificate (`ca.crt`, `tls.crt`, `tls.key`; URI SAN
 * `spiffe://<channel trust domain>/sidecar/<service>`), which the platform team provisions
 * (injector/README.md "Control channel certificate"). The default, csi mode, mounts a per-pod
 * csi-driver-spiffe certificate instead.
 */
export function proxyXdsSecretName(service: string): string {
  return `sekisho-xds-${service}`;
}
