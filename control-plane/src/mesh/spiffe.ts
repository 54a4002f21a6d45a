// A workload identity as the mesh CA issues it: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`,
// the shape Istio and SPIRE's Kubernetes workload attestor use. Everything else is refused, so a
// certificate can only ever carry an identity a Kubernetes pod could have.

export interface WorkloadIdentity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

/** A DNS label (RFC 1123): what Kubernetes allows for a namespace; service accounts are DNS subdomains, kept to a label here. */
const dnsLabel = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A trust domain: lower-case DNS labels joined by dots (SPIFFE allows `_` too; Kubernetes names do not). */
const trustDomain = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export class SpiffeIdError extends Error {
  readonly code = 'INVALID_SPIFFE_ID';
  constructor(
    readonly spiffeId: string,
    reason: string,
  ) {
    super(
      `not a workload SPIFFE id (spiffe://<trust domain>/ns/<namespace>/sa/<service account>): ${JSON.stringify(spiffeId)}: ${reason}`,
    );
    this.name = 'SpiffeIdError';
  }
}

export function isTrustDomain(value: string): boolean {
  return value.length <= 253 && trustDomain.test(value);
}

/** The parts of a workload SPIFFE id; throws SpiffeIdError naming what is wrong. */
export function parseSpiffeId(spiffeId: string): WorkloadIdentity {
  const match = /^spiffe:\/\/([^/]*)\/ns\/([^/]*)\/sa\/([^/]*)$/.exec(spiffeId);
  if (!match) throw new SpiffeIdError(spiffeId, 'expected exactly the path /ns/<namespace>/sa/<service account>');
  const [, domain = '', namespace = '', serviceAccount = ''] = match;
  if (!isTrustDomain(domain))
    throw new SpiffeIdError(spiffeId, `trust domain ${JSON.stringify(domain)} is not a lower-case DNS name`);
  if (!dnsLabel.test(namespace))
    throw new SpiffeIdError(spiffeId, `namespace ${JSON.stringify(namespace)} is not a DNS label`);
  if (!dnsLabel.test(serviceAccount))
    throw new SpiffeIdError(spiffeId, `service account ${JSON.stringify(serviceAccount)} is not a DNS label`);
  return { trustDomain: domain, namespace, serviceAccount };
}
