// A test fixture, not product code: a mesh CA made with the `openssl` CLI for one test run, and a
// WorkloadSecrets (control-plane/src/mesh/contract.ts) that serves each workload a leaf
// certificate with its SPIFFE id as URI SAN. The product's mesh CA (issuance, rotation) is
// separate; this only gives the sidecar views real certificates to serve.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkloadSecrets } from '../control-plane/src/mesh/contract';
import { certificateSecret, trustBundleSecret } from '../control-plane/src/mesh/secrets';
import type { Resource } from '../control-plane/src/xds/resources';

export interface IssuedFiles {
  certFile: string;
  keyFile: string;
  certificatePem: string;
  privateKeyPem: string;
}

export interface MeshPki {
  caFile: string;
  /** The CA's private key (for a control plane given this CA as its mesh CA). */
  caKeyFile: string;
  caPem: string;
  /** A leaf certificate (client and server use) for `spiffeId`, written as `<name>.crt/.key`. */
  issue(name: string, spiffeId: string): IssuedFiles;
  /** Serves every workload a certificate of this CA (issued on first use, then the same one). */
  workloadSecrets(): WorkloadSecrets;
  /**
   * An intermediate CA signed by this one (what a cert-manager CA ClusterIssuer signs with): its
   * `issue` writes leaves whose `certificatePem` is the chain cert-manager hands out (the leaf,
   * then the intermediate).
   */
  intermediate(name: string): Pick<MeshPki, 'caFile' | 'caKeyFile' | 'caPem' | 'issue'>;
}

/** Throws with install instructions when the openssl CLI is missing. */
export function requireOpenssl(): void {
  try {
    execFileSync('openssl', ['version'], { stdio: 'pipe' });
  } catch {
    throw new Error('this test needs the openssl CLI: apt-get install openssl (or brew install openssl)');
  }
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

export function createMeshPki(dir: string, name = 'test-mesh-ca'): MeshPki {
  requireOpenssl();
  mkdirSync(dir, { recursive: true });
  const caFile = join(dir, `${name}.crt`);
  const caKey = join(dir, `${name}.key`);
  openssl([
    ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
    ...['-keyout', caKey, '-out', caFile, '-days', '1', '-subj', `/CN=${name}`],
    ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
  ]);
  const caPem = readFileSync(caFile, 'utf8');
  let serial = 1;
  const issueWith =
    (signerFile: string, signerKey: string, chainPem: string) =>
    (leaf: string, spiffeId: string): IssuedFiles => {
      const keyFile = join(dir, `${leaf}.key`);
      const csr = join(dir, `${leaf}.csr`);
      const certFile = join(dir, `${leaf}.crt`);
      const ext = join(dir, `${leaf}.ext`);
      writeFileSync(
        ext,
        [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature,keyEncipherment',
          'extendedKeyUsage=serverAuth,clientAuth',
          `subjectAltName=URI:${spiffeId}`,
          '',
        ].join('\n'),
      );
      openssl([
        ...['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
        ...['-keyout', keyFile, '-out', csr, '-subj', `/CN=${leaf}`],
      ]);
      openssl([
        ...['x509', '-req', '-in', csr, '-CA', signerFile, '-CAkey', signerKey, '-set_serial', String(serial++)],
        ...['-days', '1', '-out', certFile, '-extfile', ext],
      ]);
      if (chainPem) writeFileSync(certFile, `${readFileSync(certFile, 'utf8')}${chainPem}`);
      return {
        certFile,
        keyFile,
        certificatePem: readFileSync(certFile, 'utf8'),
        privateKeyPem: readFileSync(keyFile, 'utf8'),
      };
    };
  const issue = issueWith(caFile, caKey, '');
  const intermediate = (sub: string) => {
    const subFile = join(dir, `${sub}.crt`);
    const subKey = join(dir, `${sub}.key`);
    const subCsr = join(dir, `${sub}.csr`);
    const subExt = join(dir, `${sub}.ext`);
    writeFileSync(subExt, 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n');
    openssl([
      ...['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', subKey, '-out', subCsr, '-subj', `/CN=${sub}`],
    ]);
    openssl([
      ...['x509', '-req', '-in', subCsr, '-CA', caFile, '-CAkey', caKey, '-set_serial', String(serial++)],
      ...['-days', '1', '-out', subFile, '-extfile', subExt],
    ]);
    const subPem = readFileSync(subFile, 'utf8');
    return { caFile: subFile, caKeyFile: subKey, caPem: subPem, issue: issueWith(subFile, subKey, subPem) };
  };
  return {
    caFile,
    caKeyFile: caKey,
    caPem,
    issue,
    intermediate,
    workloadSecrets() {
      const issued = new Map<string, Resource[]>();
      return {
        secretsFor(spiffeId) {
          let secrets = issued.get(spiffeId);
          if (!secrets) {
            const files = issue(`workload-${issued.size + 1}`, spiffeId);
            secrets = secretsOf(files, caPem);
            issued.set(spiffeId, secrets);
          }
          return secrets;
        },
        onRotation() {
          // Certificates of this fixture live for the test run: nothing to rotate.
        },
      };
    },
  };
}

/** The two Secrets of the mesh contract for one workload's certificate. */
export function secretsOf(files: Pick<IssuedFiles, 'certificatePem' | 'privateKeyPem'>, caPem: string): Resource[] {
  return [
    certificateSecret({ chainPem: files.certificatePem, privateKeyPem: files.privateKeyPem }),
    trustBundleSecret(caPem),
  ].sort((a, b) => (a.name < b.name ? -1 : 1));
}
