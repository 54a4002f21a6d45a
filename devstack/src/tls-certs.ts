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

/**
 * A server certificate for `dnsNames` and `ipAddresses`, signed by `ca`; `clientAuth`: usable
 * as a client certificate too (servers that connect to each other, like a Redis Cluster's bus).
 */
export async function issueServerCertificate(
  ca: CertificateAuthority,
  opts: {
    commonName: string;
    dnsNames?: string[];
    ipAddresses?: string[];
    clientAuth?: boolean;
    validDays?: number;
    now?: Date;
  },
): Promise<ServerCertificate> {
  const keys = await rsaKeys();
  const now = opts.now ?? new Date();
  const serialHex = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^0/, '1');
  const certificatePem = await createSelfSignedCertificate({
    keys,
    commonName: opts.commonName,
    serialHex,
    subjectAltNames: { dns: opts.dnsNames ?? [], ip: opts.ipAddresses ?? [] },
    clientAuth: opts.clientAuth,
    issuer: { commonName: ca.commonName, privateKey: ca.keys.privateKey },
    notBefore: new Date(now.getTime() - day),
    notAfter: new Date(now.getTime() + (opts.validDays ?? 825) * day),
  });
  return { certificatePem, privateKeyPem: await privateKeyPem(keys), serialHex };
}
