// Issues one workload certificate (an X.509-SVID): a fresh ECDSA P-256 key, the SPIFFE id as
// the only subject alternative name, usable for TLS on both ends (serverAuth and clientAuth),
// signed by the mesh CA. The structure is built with @peculiar/asn1-x509's schema and signed
// with node:crypto, synchronously, so a view asking for a secret never waits on a promise.
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509';
import type { CaMaterial } from './ca-material';

export interface IssuedCertificate {
  spiffeId: string;
  /** Leaf then intermediates (PEM): what a peer needs to build the path to the trust bundle. */
  chainPem: string;
  /** PKCS#8 PEM of the leaf's key. Never logged. */
  privateKeyPem: string;
  /** Hex, upper-case, as node's X509Certificate.serialNumber shows it. */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

export interface IssueOptions {
  now: Date;
  ttlMs: number;
  /** notBefore is this far before `now`, for peers whose clocks run behind. */
  backdateMs: number;
}

/** The signature algorithm for the CA's key: ECDSA with the curve's hash, else RSA PKCS#1 v1.5 with SHA-256. */
function signatureAlgorithm(ca: CaMaterial): { hash: string; identifier: AlgorithmIdentifier } {
  if (ca.signerKey.asymmetricKeyType === 'ec') {
    const p384 = ca.signerKey.asymmetricKeyDetails?.namedCurve === 'secp384r1';
    return {
      hash: p384 ? 'sha384' : 'sha256',
      identifier: new AlgorithmIdentifier({ algorithm: p384 ? '1.2.840.10045.4.3.3' : '1.2.840.10045.4.3.2' }),
    };
  }
  // sha256WithRSAEncryption, whose parameters are an explicit NULL.
  return {
    hash: 'sha256',
    identifier: new AlgorithmIdentifier({
      algorithm: '1.2.840.113549.1.1.11',
      parameters: new Uint8Array([5, 0]).buffer,
    }),
  };
}

const keyIdOf = (spki: SubjectPublicKeyInfo): ArrayBuffer => {
  const digest = createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest();
  return digest.buffer.slice(digest.byteOffset, digest.byteOffset + digest.byteLength) as ArrayBuffer;
};

const extension = (extnID: string, critical: boolean, value: unknown): Extension =>
  new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });

/** A positive 128-bit serial (RFC 5280 allows up to 20 octets; the top bit clear keeps it positive). */
function serialNumber(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01;
  return serial;
}

const pem = (label: string, der: Buffer): string =>
  `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END ${label}-----\n`;

export function issueWorkloadCertificate(ca: CaMaterial, spiffeId: string, opts: IssueOptions): IssuedCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo);
  const notBefore = new Date(Math.floor((opts.now.getTime() - opts.backdateMs) / 1000) * 1000);
  // Never past the CA's own expiry: a peer would refuse the chain from then on anyway.
  const notAfter = new Date(Math.floor(Math.min(opts.now.getTime() + opts.ttlMs, ca.notAfter.getTime()) / 1000) * 1000);
  const caTbs = ca.signerAsn.tbsCertificate;
  // The CA's own subject key identifier when it has one, else computed the same way (RFC 5280 4.2.1.2 method 1).
  const caSki = caTbs.extensions?.find((e) => e.extnID === id_ce_subjectKeyIdentifier);
  const caKeyId = caSki
    ? AsnConvert.parse(caSki.extnValue, SubjectKeyIdentifier).buffer
    : keyIdOf(caTbs.subjectPublicKeyInfo);
  const algorithm = signatureAlgorithm(ca);
  const serial = serialNumber();
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: serial.buffer.slice(serial.byteOffset, serial.byteOffset + serial.byteLength) as ArrayBuffer,
    signature: algorithm.identifier,
    issuer: caTbs.subject,
    validity: new Validity({ notBefore, notAfter }),
    // An empty subject: the identity is the URI SAN alone, which RFC 5280 then requires to be critical.
    subject: new Name(),
    subjectPublicKeyInfo: spki,
    extensions: new Extensions([
      extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: false })),
      extension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyAgreement)),
      extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage([id_kp_serverAuth, id_kp_clientAuth])),
      extension(
        id_ce_subjectAltName,
        true,
        new SubjectAlternativeName([new GeneralName({ uniformResourceIdentifier: spiffeId })]),
      ),
      extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyIdOf(spki))),
      extension(
        id_ce_authorityKeyIdentifier,
        false,
        new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(caKeyId) }),
      ),
    ]),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = sign(algorithm.hash, tbsDer, ca.signerKey);
  const certificate = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: algorithm.identifier,
    signatureValue: signature.buffer.slice(
      signature.byteOffset,
      signature.byteOffset + signature.byteLength,
    ) as ArrayBuffer,
  });
  const leafPem = pem('CERTIFICATE', Buffer.from(AsnConvert.serialize(certificate)));
  return {
    spiffeId,
    chainPem: leafPem + ca.intermediatesPem,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    serialNumber: serial.toString('hex').toUpperCase(),
    notBefore,
    notAfter,
  };
}
