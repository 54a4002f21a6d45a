// Certificates for the control channel (ADS) of one local stack: a CA made for the run, the
// control plane's server certificate, and a client certificate per xDS client with its
// SPIFFE-style identity. Per run, so no private key of the channel is ever committed.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueClientCertificate,
  issueServerCertificate,
} from './tls-certs';

/** The name the control plane's certificate is issued for and the clients expect. */
export const controlPlaneServerName = 'control-plane.sekisho.local';
export const defaultTrustDomain = 'sekisho.local';

export interface CertificateFiles {
  certFile: string;
  keyFile: string;
}

export interface ControlChannelCertificates {
  dir: string;
  /** The CA itself (its private key in memory only), to issue more certificates in a test. */
  ca: CertificateAuthority;
  /** The CA that signed every certificate below: the clients' and the control plane's trust anchor. */
  caFile: string;
  trustDomain: string;
  serverName: string;
  controlPlane: CertificateFiles;
  /** Client certificates by the identity's path: `ingress`, `ext-authz`, `ratelimit`. */
  clients: Record<string, CertificateFiles>;
  /** Issues one more client certificate in `dir` (tests: an identity the node may not claim). */
  issueClient(name: string, uris: string[], dnsNames?: string[]): Promise<CertificateFiles>;
}

async function write(dir: string, name: string, certificate: { certificatePem: string; privateKeyPem: string }) {
  const files = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
  await writeFile(files.certFile, certificate.certificatePem);
  await writeFile(files.keyFile, certificate.privateKeyPem, { mode: 0o600 });
  return files;
}

/**
 * Writes into `dir`: `ca.crt`, `control-plane.{crt,key}` (DNS `control-plane.sekisho.local`,
 * `localhost`, IP 127.0.0.1) and `<client>.{crt,key}` with the URI SAN
 * `spiffe://<trustDomain>/<client>` for every name in `clients`.
 */
export async function createControlChannelCertificates(
  dir: string,
  {
    clients = ['ingress', 'ext-authz', 'ratelimit'],
    trustDomain = defaultTrustDomain,
    ca: givenCa,
  }: { clients?: string[]; trustDomain?: string; ca?: CertificateAuthority } = {},
): Promise<ControlChannelCertificates> {
  await mkdir(dir, { recursive: true });
  const ca = givenCa ?? (await createCertificateAuthority('Sekisho control channel CA (local run)'));
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, ca.certificatePem);
  const controlPlane = await write(
    dir,
    'control-plane',
    await issueServerCertificate(ca, {
      commonName: controlPlaneServerName,
      dnsNames: [controlPlaneServerName, 'localhost'],
      ipAddresses: ['127.0.0.1'],
      uris: [`spiffe://${trustDomain}/control-plane`],
    }),
  );
  const issueClient = async (name: string, uris: string[], dnsNames: string[] = []) =>
    write(dir, name, await issueClientCertificate(ca, { commonName: name, uris, dnsNames }));
  const issued = await Promise.all(
    clients.map(async (name) => [name, await issueClient(name, [`spiffe://${trustDomain}/${name}`])] as const),
  );
  return {
    dir,
    ca,
    caFile,
    trustDomain,
    serverName: controlPlaneServerName,
    controlPlane,
    clients: Object.fromEntries(issued),
    issueClient,
  };
}
