// Names of a sidecar view's resources (each view is its own namespace of names).
export const sidecarInboundName = 'sidecar_inbound';
export const sidecarOutboundName = 'sidecar_outbound';
/** The app behind the sidecar, on loopback. */
export const sidecarAppClusterName = 'sidecar_app';

/** The node cluster a sidecar of `service` announces (injector/README.md's identity contract), and its view's name. */
export function sidecarNodeCluster(service: string): string {
  return `sidecar:${service}`;
}
