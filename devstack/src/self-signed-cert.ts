import { webcrypto } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

// X.509 v3 certificates for RSA keys, DER-encoded by hand. By default what Firebase's x509
// endpoint needs: a certificate that carries the public key and is signed by it
// (sha256WithRSAEncryption). With `subjectAltNames` it is a TLS server certificate, with
// `ca` a certificate authority, and with `issuer` it is signed by that CA instead of
// itself (the development HTTPS certificate of tls-certs.ts). Writing these lines avoids a certificate
// library (the WebCrypto one needs a global reflect-metadata polyfill in every process
// that imports devstack). node:crypto's X509Certificate parses and verifies the output.

export interface SelfSignedCertificateOptions {
  /** RSASSA-PKCS1-v1_5 / SHA-256 key pair; the public key must be exportable. */
  keys: webcrypto.CryptoKeyPair;
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  /** Positive serial number as hex; random 16 bytes when omitted. */
  serialHex?: string;
  /** DNS names and IP addresses a TLS server certificate is valid for (subjectAltName). */
  subjectAltNames?: { dns?: readonly string[]; ip?: readonly string[] };
  /** A TLS server certificate that may also authenticate as a client (extKeyUsage clientAuth too). */
  clientAuth?: boolean;
  /** A certificate authority: may sign certificates (basicConstraints cA, keyCertSign). */
  ca?: boolean;
  /** Signed by this CA (its certificate's common name and private key) instead of by `keys`. */
  issuer?: { commonName: string; privateKey: webcrypto.CryptoKey };
}

const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11';
const OID_COMMON_NAME = '2.5.4.3';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

export async function createSelfSignedCertificate(opts: SelfSignedCertificateOptions): Promise<string> {
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', opts.keys.publicKey));
  const signatureAlgorithm = seq(oid(OID_SHA256_WITH_RSA), nul());
  const distinguishedName = (commonName: string) => seq(set(seq(oid(OID_COMMON_NAME), utf8(commonName))));
  const name = distinguishedName(opts.commonName);
  const serial = opts.serialHex ?? Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex');
  const extensions = seq(...certificateExtensions(opts));
  const tbs = seq(
    tlv(0xa0, integer(Uint8Array.of(2))), // [0] EXPLICIT version v3
    integer(Buffer.from(serial, 'hex')),
    signatureAlgorithm,
    opts.issuer ? distinguishedName(opts.issuer.commonName) : name, // issuer = subject: self-signed
    seq(time(opts.notBefore), time(opts.notAfter)),
    name,
    spki,
    tlv(0xa3, extensions), // [3] EXPLICIT extensions
  );
  const signingKey = opts.issuer?.privateKey ?? opts.keys.privateKey;
  const signature = new Uint8Array(await webcrypto.subtle.sign({ name: 'RSASSA-PKCS1-v1_5' }, signingKey, tbs));
  const der = seq(tbs, signatureAlgorithm, bitString(signature));
  return toPem(der, 'CERTIFICATE');
}

function certificateExtensions(opts: SelfSignedCertificateOptions): Uint8Array[] {
  if (opts.ca) {
    return [
      seq(oid(OID_BASIC_CONSTRAINTS), bool(true), octets(seq(bool(true)))),
      // keyCertSign and cRLSign (bits 5 and 6)
      seq(oid(OID_KEY_USAGE), bool(true), octets(bitString(Uint8Array.of(0x06), 1))),
    ];
  }
  const names = opts.subjectAltNames;
  if (!names) {
    // Like Google's securetoken certificates: an end-entity key for signatures only.
    return [
      seq(oid(OID_BASIC_CONSTRAINTS), bool(true), octets(seq())),
      seq(oid(OID_KEY_USAGE), bool(true), octets(bitString(Uint8Array.of(0x80), 7))),
    ];
  }
  const generalNames = [
    ...(names.dns ?? []).map((dns) => tlv(0x82, Buffer.from(dns, 'ascii'))), // [2] dNSName
    ...(names.ip ?? []).map((ip) => tlv(0x87, ipBytes(ip))), // [7] iPAddress
  ];
  return [
    seq(oid(OID_BASIC_CONSTRAINTS), bool(true), octets(seq())),
    // digitalSignature and keyEncipherment (bits 0 and 2): an RSA TLS server key
    seq(oid(OID_KEY_USAGE), bool(true), octets(bitString(Uint8Array.of(0xa0), 5))),
    seq(oid(OID_EXT_KEY_USAGE), octets(seq(oid(OID_SERVER_AUTH), ...(opts.clientAuth ? [oid(OID_CLIENT_AUTH)] : [])))),
    seq(oid(OID_SUBJECT_ALT_NAME), octets(seq(...generalNames))),
  ];
}

function ipBytes(ip: string): Uint8Array {
  if (isIPv4(ip)) return Uint8Array.from(ip.split('.').map(Number));
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${ip}`);
  const [head = '', tail = ''] = ip.split('::');
  const groups = (part: string) => (part ? part.split(':') : []);
  const missing = 8 - groups(head).length - groups(tail).length;
  const all = ip.includes('::') ? [...groups(head), ...Array(missing).fill('0'), ...groups(tail)] : groups(ip);
  return Uint8Array.from(all.flatMap((group) => [Number.parseInt(group, 16) >> 8, Number.parseInt(group, 16) & 0xff]));
}

export function toPem(der: Uint8Array, label: string): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const body = Buffer.concat(contents);
  return Buffer.concat([Uint8Array.of(tag), length(body.length), body]);
}

function length(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

const seq = (...items: Uint8Array[]) => tlv(0x30, ...items);
const set = (...items: Uint8Array[]) => tlv(0x31, ...items);
const nul = () => Uint8Array.of(0x05, 0x00);
const bool = (v: boolean) => Uint8Array.of(0x01, 0x01, v ? 0xff : 0x00);
const octets = (b: Uint8Array) => tlv(0x04, b);
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const bitString = (b: Uint8Array, unusedBits = 0) => tlv(0x03, Uint8Array.of(unusedBits), b);

function integer(unsigned: Uint8Array): Uint8Array {
  let start = 0;
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++;
  const trimmed = unsigned.subarray(start);
  // DER integers are two's complement: a leading 1 bit would make the value negative.
  const needsPad = (trimmed[0] ?? 0) >= 0x80;
  return tlv(0x02, needsPad ? Buffer.concat([Uint8Array.of(0), trimmed]) : trimmed);
}

function oid(dotted: string): Uint8Array {
  const parts = dotted.split('.').map(Number);
  const [first = 0, second = 0, ...rest] = parts;
  const bytes: number[] = [first * 40 + second];
  for (const part of rest) {
    const chunk: number[] = [];
    for (let v = part; ; v = Math.floor(v / 128)) {
      chunk.unshift((v & 0x7f) | (chunk.length > 0 ? 0x80 : 0));
      if (v < 128) break;
    }
    bytes.push(...chunk);
  }
  return tlv(0x06, Uint8Array.from(bytes));
}

// RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
function time(d: Date): Uint8Array {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '');
  return d.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'))
    : tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}
