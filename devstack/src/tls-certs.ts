// Certificates for HTTPS on one machine: a development CA and server certificates it signs
// (what `npm start` serves, and what the TLS tests rotate). A client trusts the CA once
// (`curl --cacert`), so a rotated server certificate is trusted as soon as it is served.
import { webcrypto } from 'node:crypto';
import { createSelfSignedCertificate, toPem } from './self-signed-cert';

export interface CertificateAuthority {
  commonName: string;
  certificatePem: string;
  keys: webcrypto.CryptoKeyPair;
}

export interface ServerCertificate {
  certificatePem: string;
  privateKeyPem: string;
  serialHex: string;
}

const day = 24 * 60 * 60 * 1000;

async function rsaKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(
    { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    true,
    ['sign', 'verify'],
  )) as webcrypto.CryptoKeyPair;
}

export async function privateKeyPem(keys: webcrypto.CryptoKeyPair): Promise<string> {
  return toPem(new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY');
}

export async function createCertificateAuthority(
  commonName: string,
  { validDays = 3650, now = new Date() }: { validDays?: number; now?: Date } = {},
): Promise<CertificateAuthority> {
  const keys = await rsaKeys();
  const certificatePem = await createSelfSignedCertificate({
    keys,
    commonName,
    ca: true,
    notBefore: new Date(now.getTime() - day),
    notAfter: new Date(now.getTime() + validDays * day),
  });
  return { commonName, certificatePem, keys };
}

export interface IssueOptions {
  commonName: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  /** URI SANs, e.g. a SPIFFE id `spiffe://sekisho.local/ingress` (the control channel's client identity). */
  uris?: string[];
  /** extendedKeyUsage; default serverAuth. A control-channel client needs clientAuth. */
  usages?: Array<'serverAuth' | 'clientAuth'>;
  validDays?: number;
  now?: Date;
}

/** A certificate for `dnsNames`, `ipAddresses` and `uris`, signed by `ca`. */
export async function issueServerCertificate(ca: CertificateAuthority, opts: IssueOptions): Promise<ServerCertificate> {
  const keys = await rsaKeys();
  const now = opts.now ?? new Date();
  const serialHex = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^0/, '1');
  const certificatePem = await createSelfSignedCertificate({
    keys,
    commonName: opts.commonName,
    serialHex,
    subjectAltNames: { dns: opts.dnsNames ?? [], ip: opts.ipAddresses ?? [], uri: opts.uris ?? [] },
    usages: opts.usages ?? ['serverAuth'],
    issuer: { commonName: ca.commonName, privateKey: ca.keys.privateKey },
    notBefore: new Date(now.getTime() - day),
    notAfter: new Date(now.getTime() + (opts.validDays ?? 825) * day),
  });
  return { certificatePem, privateKeyPem: await privateKeyPem(keys), serialHex };
}

/** A TLS client certificate (clientAuth) for the identities in `uris` / `dnsNames`, signed by `ca`. */
export function issueClientCertificate(
  ca: CertificateAuthority,
  opts: Omit<IssueOptions, 'usages' | 'ipAddresses'>,
): Promise<ServerCertificate> {
  return issueServerCertificate(ca, { ...opts, usages: ['clientAuth'] });
}
