// The two Secret resources of the mesh contract (contract.ts), packed for SDS: one place that
// builds them for the mesh CA, for the CLI's --workload-cert files and for tests.
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { pack } from '../translate/any';
import type { Resource } from '../xds/resources';
import { meshSecretNames } from './contract';
import type { IssuedCertificate } from './issue';

/** The Secret of a workload: its chain and key, named meshSecretNames.certificate. */
export function certificateSecret(certificate: Pick<IssuedCertificate, 'chainPem' | 'privateKeyPem'>): Resource {
  return {
    name: meshSecretNames.certificate,
    resource: pack(
      Secret,
      Secret.fromPartial({
        name: meshSecretNames.certificate,
        tlsCertificate: {
          certificateChain: { inlineString: certificate.chainPem },
          privateKey: { inlineString: certificate.privateKeyPem },
        },
      }),
    ),
  };
}

/** The trust bundle as a validation context, named meshSecretNames.trustBundle. */
export function trustBundleSecret(bundlePem: string): Resource {
  return {
    name: meshSecretNames.trustBundle,
    resource: pack(
      Secret,
      Secret.fromPartial({
        name: meshSecretNames.trustBundle,
        validationContext: { trustedCa: { inlineString: bundlePem } },
      }),
    ),
  };
}
