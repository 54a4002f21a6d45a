// Workload certificates and the last good definition saved on disk (last-good.ts). A workload's
// private key is never written there: the certificate Secret is saved without it (the chain
// stays, because its URI SAN says whose it is). When a saved definition is served (a restart
// while the file is invalid) every saved workload certificate is replaced by a current one from
// the mesh CA for the same SPIFFE id, so a sidecar never gets a stale or key-less certificate.
import { X509Certificate } from 'node:crypto';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { pack } from '../translate/any';
import type { Resource, ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { meshSecretNames, type WorkloadSecrets } from './contract';

const isMeshSecret = (resource: Resource) =>
  resource.name === meshSecretNames.certificate || resource.name === meshSecretNames.trustBundle;

function mapSecrets(
  groups: ReadonlyMap<string, ResourcesByType>,
  change: (secrets: Resource[]) => Resource[],
): Map<string, ResourcesByType> {
  return new Map(
    [...groups].map(([group, byType]) => {
      const secrets = byType.get(typeUrls.secret);
      if (!secrets?.some(isMeshSecret)) return [group, byType];
      const next = new Map(byType);
      next.set(typeUrls.secret, change(secrets));
      return [group, next];
    }),
  );
}

/** The groups as they may be written to disk: each workload certificate without its private key. */
export function withoutWorkloadKeys(groups: ReadonlyMap<string, ResourcesByType>): Map<string, ResourcesByType> {
  return mapSecrets(groups, (secrets) =>
    secrets.map((resource) => {
      if (resource.name !== meshSecretNames.certificate) return resource;
      const secret = Secret.decode(resource.resource.value);
      if (secret.tlsCertificate) secret.tlsCertificate.privateKey = undefined;
      return { name: resource.name, resource: pack(Secret, secret) };
    }),
  );
}

/** The SPIFFE id a saved workload certificate was issued for (its URI SAN), if it names one. */
export function savedWorkloadIdentity(resource: Resource): string | undefined {
  const pem = Secret.decode(resource.resource.value).tlsCertificate?.certificateChain?.inlineString;
  const first = pem?.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0];
  if (!first) return undefined;
  try {
    const san = new X509Certificate(first).subjectAltName ?? '';
    return san
      .split(', ')
      .find((name) => name.startsWith('URI:spiffe://'))
      ?.slice('URI:'.length);
  } catch {
    return undefined;
  }
}

/**
 * Saved groups with every workload's Secrets issued anew by `secrets` for the identity the saved
 * certificate names. Throws when a saved certificate names no SPIFFE id (a file not written by
 * this code): serving it without a key would leave the sidecar without TLS.
 */
export function withCurrentWorkloadSecrets(
  groups: ReadonlyMap<string, ResourcesByType>,
  secrets: WorkloadSecrets,
): Map<string, ResourcesByType> {
  return mapSecrets(groups, (saved) => {
    const certificate = saved.find((resource) => resource.name === meshSecretNames.certificate);
    const identity = certificate && savedWorkloadIdentity(certificate);
    if (!identity) throw new Error('a saved workload certificate names no SPIFFE id');
    return [...saved.filter((resource) => !isMeshSecret(resource)), ...secrets.secretsFor(identity)].sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
  });
}
