// The mesh CA's signing material, read from files and checked before anything is issued with
// it: the signing certificate (an intermediate usually, followed by any further intermediates),
// its private key, and the trust bundle (the root or roots every workload trusts). A problem is
// a ConfigError naming the environment variable of the file at fault, never the key's content.
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  KeyUsage,
  KeyUsageFlags,
} from '@peculiar/asn1-x509';
import { ConfigError } from '@sekisho/service-kit/config';

/** Where the CA comes from: three files, or a kubernetes.io/tls Secret (cert-manager's layout) mounted as a directory. */
export type CaSource =
  | { kind: 'files'; certFile: string; keyFile: string; bundleFile: string }
  | { kind: 'directory'; dir: string };

export const meshCaVariables = {
  certFile: 'CONTROL_PLANE_MESH_CA_CERT_FILE',
  keyFile: 'CONTROL_PLANE_MESH_CA_KEY_FILE',
  bundleFile: 'CONTROL_PLANE_MESH_CA_BUNDLE_FILE',
  dir: 'CONTROL_PLANE_MESH_CA_DIR',
} as const;

/** The three files of a source and the variable each is reported under. */
export function caFilesOf(source: CaSource): Record<'cert' | 'key' | 'bundle', { file: string; variable: string }> {
  if (source.kind === 'files')
    return {
      cert: { file: source.certFile, variable: meshCaVariables.certFile },
      key: { file: source.keyFile, variable: meshCaVariables.keyFile },
      bundle: { file: source.bundleFile, variable: meshCaVariables.bundleFile },
    };
  const variable = meshCaVariables.dir;
  return {
    cert: { file: join(source.dir, 'tls.crt'), variable: `${variable} (tls.crt)` },
    key: { file: join(source.dir, 'tls.key'), variable: `${variable} (tls.key)` },
    bundle: { file: join(source.dir, 'ca.crt'), variable: `${variable} (ca.crt)` },
  };
}

export interface CaMaterial {
  /** The certificate that signs workload certificates. */
  signer: X509Certificate;
  /** Its DER, parsed: the issuer name and key identifier of every certificate it signs come from here. */
  signerAsn: Certificate;
  signerKey: KeyObject;
  /** PEM of the signer and the intermediates above it, without self-signed roots: appended to every leaf. */
  intermediatesPem: string;
  /** PEM of the trust bundle, as read. */
  bundlePem: string;
  /** No certificate may outlive this: the earliest notAfter of the signer's chain. */
  notAfter: Date;
  /** SHA-256 fingerprints of the signer and the bundle: what changed when the files change. */
  fingerprint: string;
}

/** The PEM certificate blocks of a text, in order. */
export const pemBlocks = (text: string): string[] =>
  text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

/** A certificate's subject on one line, for messages ("O=Sekisho, CN=mesh intermediate"). */
export const subjectOf = (cert: X509Certificate): string => cert.subject.replaceAll('\n', ', ') || '(empty subject)';

const selfSigned = (cert: X509Certificate): boolean => cert.checkIssued(cert) && cert.verify(cert.publicKey);

/** Reads and checks a CA source at time `now`; a ConfigError lists every problem with its variable. */
export function loadCaMaterial(source: CaSource, now: Date = new Date()): CaMaterial {
  const files = caFilesOf(source);
  const problems: Array<{ variable: string; message: string }> = [];
  const fail = (which: keyof typeof files, message: string) =>
    problems.push({ variable: files[which].variable, message: `${files[which].file}: ${message}` });
  const read = (which: keyof typeof files): string | undefined => {
    try {
      return readFileSync(files[which].file, 'utf8');
    } catch (error) {
      fail(which, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
      return undefined;
    }
  };
  const certsOf = (which: 'cert' | 'bundle', text: string | undefined): X509Certificate[] => {
    if (text === undefined) return [];
    const blocks = pemBlocks(text);
    if (blocks.length === 0) fail(which, 'holds no PEM certificate');
    const certs: X509Certificate[] = [];
    for (const [i, block] of blocks.entries()) {
      try {
        certs.push(new X509Certificate(block));
      } catch (error) {
        fail(which, `certificate ${i + 1} cannot be parsed: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    return certs;
  };
  const certText = read('cert');
  const keyText = read('key');
  const bundlePem = read('bundle');
  const chain = certsOf('cert', certText);
  const roots = certsOf('bundle', bundlePem);
  let signerKey: KeyObject | undefined;
  if (keyText !== undefined) {
    try {
      signerKey = createPrivateKey(keyText);
    } catch {
      // The parser's message is not echoed: it could quote the file.
      fail('key', 'is not an unencrypted PEM private key');
    }
  }
  const signer = chain[0];
  let signerAsn: Certificate | undefined;
  if (signer) {
    signerAsn = AsnConvert.parse(signer.raw, Certificate);
    const extension = (id: string) => signerAsn?.tbsCertificate.extensions?.find((e) => e.extnID === id);
    const basic = extension(id_ce_basicConstraints);
    if (!basic || !AsnConvert.parse(basic.extnValue, BasicConstraints).cA)
      fail('cert', `${subjectOf(signer)} is not a CA certificate (basicConstraints CA:TRUE)`);
    const usage = extension(id_ce_keyUsage);
    if (!usage || !(AsnConvert.parse(usage.extnValue, KeyUsage).toNumber() & KeyUsageFlags.keyCertSign))
      fail('cert', 'the CA certificate may not sign certificates (keyUsage keyCertSign is missing)');
    if (signerKey) {
      if (!['ec', 'rsa'].includes(signerKey.asymmetricKeyType ?? ''))
        fail('key', `a ${signerKey.asymmetricKeyType} key cannot sign here: use ECDSA (P-256, P-384) or RSA`);
      else if (
        signerKey.asymmetricKeyType === 'ec' &&
        !['prime256v1', 'secp384r1'].includes(signerKey.asymmetricKeyDetails?.namedCurve ?? '')
      )
        fail('key', `the EC curve ${signerKey.asymmetricKeyDetails?.namedCurve} is not supported: use P-256 or P-384`);
      else if (!signer.checkPrivateKey(signerKey)) fail('key', `is not the private key of ${files.cert.file}`);
    }
  }
  for (const cert of chain) {
    if (new Date(cert.validTo) <= now)
      fail('cert', `${subjectOf(cert)} expired at ${new Date(cert.validTo).toISOString()}`);
    else if (new Date(cert.validFrom) > now)
      fail('cert', `${subjectOf(cert)} is not valid before ${new Date(cert.validFrom).toISOString()}`);
  }
  // Each certificate of the file is issued by the next; the last one by a root of the bundle (or is one).
  for (let i = 0; i + 1 < chain.length; i++) {
    const [child, parent] = [chain[i] as X509Certificate, chain[i + 1] as X509Certificate];
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey))
      fail(
        'cert',
        `certificate ${i + 1} (${subjectOf(child)}) is not signed by certificate ${i + 2} (${subjectOf(parent)})`,
      );
  }
  const top = chain.at(-1);
  if (top && roots.length > 0) {
    const anchored = roots.some(
      (root) => root.fingerprint256 === top.fingerprint256 || (top.checkIssued(root) && top.verify(root.publicKey)),
    );
    if (!anchored)
      fail('bundle', `no certificate of the bundle issued ${subjectOf(top)} (${files.cert.file} does not chain to it)`);
  }
  for (const root of roots) {
    if (!root.ca) fail('bundle', `${subjectOf(root)} is not a CA certificate`);
    if (new Date(root.validTo) <= now)
      fail('bundle', `${subjectOf(root)} expired at ${new Date(root.validTo).toISOString()}`);
  }
  if (problems.length > 0 || !signer || !signerAsn || !signerKey || bundlePem === undefined)
    throw new ConfigError(problems);
  const intermediates = chain.filter((cert) => !selfSigned(cert));
  return {
    signer,
    signerAsn,
    signerKey,
    intermediatesPem: intermediates.map((cert) => cert.toString()).join(''),
    bundlePem: roots.map((cert) => cert.toString()).join(''),
    notAfter: new Date(Math.min(...chain.map((cert) => new Date(cert.validTo).getTime()))),
    fingerprint: [...chain, ...roots].map((cert) => cert.fingerprint256).join(','),
  };
}
