// What the mesh's two halves agree on: the sidecar (and ingress) views reference the workload's
// certificate and the mesh's trust bundle by these SDS names, and the mesh CA supplies the
// Secret resources behind them. The views are translated from the definition (pure); the
// secrets are issued per workload identity and change on their own clock (rotation), so they
// are added to a view's resources by a WorkloadSecrets source rather than by the translator.
import type { Resource } from '../xds/resources';

/** SDS resource names every mesh proxy's listeners and clusters read over ADS. */
export const meshSecretNames = {
  /** The workload's own certificate chain and private key (a tls_certificate Secret). */
  certificate: 'sekisho-mesh-certificate',
  /** The mesh's trust bundle: the CA certificates a peer's chain must end in (a validation_context Secret). */
  trustBundle: 'sekisho-mesh-trust-bundle',
} as const;

/** `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`: a workload's identity. */
export function spiffeIdOf(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** Where a mesh view's TLS secrets come from: the mesh CA in production. */
export interface WorkloadSecrets {
  /**
   * The packed Secret resources named meshSecretNames.certificate and .trustBundle for the
   * workload `spiffeId`. The same certificate is returned until it is due for rotation.
   */
  secretsFor(spiffeId: string): Resource[];
  /** Called when a certificate handed out is due for rotation: the views must be served again. */
  onRotation(listener: () => void): void;
}
