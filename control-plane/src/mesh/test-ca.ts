// Test CAs made with the openssl command line (an implementation independent of the one under
// test): a self-signed root and an intermediate it signs, in a kubernetes.io/tls-style
// directory or as separate files, plus the broken variants the loader must refuse. Not used at run time.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const config = `
[req]
distinguished_name = dn
prompt = no
[dn]
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[not_a_ca]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
[no_cert_sign]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,cRLSign
`;

const openssl = (dir: string, ...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

export type KeyKind = 'ec' | 'rsa';
const newKey = (kind: KeyKind) =>
  kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048'];

export interface TestCa {
  dir: string;
  rootCert: string;
  rootKey: string;
  /** The signing certificate (the intermediate) and its key. */
  cert: string;
  key: string;
  /** A kubernetes.io/tls-style directory: tls.crt (intermediate), tls.key, ca.crt (root). */
  secretDir: string;
}

/** A root and an intermediate (extensions `section` of the config above) in `dir`. */
export function createTestCa(
  dir: string,
  {
    name = 'mesh',
    intermediateKey = 'ec',
    section = 'intermediate',
    days = 30,
  }: {
    name?: string;
    intermediateKey?: KeyKind;
    section?: 'intermediate' | 'not_a_ca' | 'no_cert_sign';
    days?: number;
  } = {},
): TestCa {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'openssl.cnf'), config);
  const rootCert = join(dir, `${name}-root.crt`);
  const rootKey = join(dir, `${name}-root.key`);
  openssl(
    dir,
    'req',
    '-x509',
    '-config',
    'openssl.cnf',
    '-extensions',
    'root',
    ...newKey('ec'),
    '-nodes',
    '-keyout',
    rootKey,
    '-out',
    rootCert,
    '-days',
    '3650',
    '-subj',
    `/O=Sekisho test/CN=${name} root`,
  );
  const cert = join(dir, `${name}-intermediate.crt`);
  const key = join(dir, `${name}-intermediate.key`);
  const csr = join(dir, `${name}-intermediate.csr`);
  openssl(
    dir,
    'req',
    '-new',
    '-config',
    'openssl.cnf',
    ...newKey(intermediateKey),
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    `/O=Sekisho test/CN=${name} intermediate`,
  );
  openssl(
    dir,
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    rootCert,
    '-CAkey',
    rootKey,
    '-CAcreateserial',
    '-days',
    String(days),
    '-extfile',
    'openssl.cnf',
    '-extensions',
    section,
    '-out',
    cert,
  );
  const secretDir = join(dir, `${name}-secret`);
  mkdirSync(secretDir, { recursive: true });
  openssl(dir, 'x509', '-in', cert, '-out', join(secretDir, 'tls.crt'));
  openssl(dir, 'pkey', '-in', key, '-out', join(secretDir, 'tls.key'));
  openssl(dir, 'x509', '-in', rootCert, '-out', join(secretDir, 'ca.crt'));
  return { dir, rootCert, rootKey, cert, key, secretDir };
}

/** `openssl verify` of a leaf (first PEM block of `chainPem`) against `rootFile`, intermediates from the chain. */
export function opensslVerify(dir: string, chainPem: string, rootFile: string, purpose = 'sslclient'): string {
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
  const leaf = join(dir, 'verify-leaf.pem');
  const untrusted = join(dir, 'verify-untrusted.pem');
  writeFileSync(leaf, blocks[0] ?? '');
  writeFileSync(untrusted, blocks.slice(1).join(''));
  const args = ['verify', '-CAfile', rootFile, '-purpose', purpose];
  if (blocks.length > 1) args.push('-untrusted', untrusted);
  return openssl(dir, ...args, leaf).toString();
}
