import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { ServerCredentials } from '@grpc/grpc-js';
import { ConfigError } from '@sekisho/service-kit/config';
import type { Logger } from '@sekisho/service-kit/logger';
import { filesStamp } from '@sekisho/service-kit/xds-channel';
import { pemBlocks } from '../mesh/ca-material';

// The control plane's side of the control channel: TLS that requires a client certificate
// signed by the client CA (a client without one is refused in the handshake, before any gRPC),
// with the three files re-read when they change, so a rotated certificate (cert-manager, a
// Kubernetes secret's `..data` symlink swap) is served to new connections without a restart.
//
// With a mesh CA, the handshake also trusts the mesh trust bundle (its `ca.crt`), so a sidecar
// can present its per-pod workload certificate (csi-driver-spiffe); channel/identity.ts then
// tells the two CAs' certificates apart and lets each name only its own kind of identity.

export interface ServerTlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile: string;
}

/** The environment variables the files come from, for errors. */
export const serverTlsVariables: Record<keyof ServerTlsFiles, string> = {
  certFile: 'CONTROL_PLANE_TLS_CERT_FILE',
  keyFile: 'CONTROL_PLANE_TLS_KEY_FILE',
  clientCaFile: 'CONTROL_PLANE_TLS_CLIENT_CA_FILE',
};

/** The mesh trust bundle the handshake trusts besides the client CA, and the variable it comes from. */
interface MeshBundleFile {
  file: string;
  variable: string;
}

interface TlsMaterial {
  /** Every certificate the handshake trusts: the client CA file, then the mesh bundle. */
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** The certificates of the client CA file alone. */
  channelAuthorities: X509Certificate[];
}

const pemCertificates = (pem: Buffer): string[] => pemBlocks(pem.toString('utf8'));

/** Reads and checks the files; a ConfigError names the variable of each bad one. */
export function readServerTls(files: ServerTlsFiles, meshBundle?: MeshBundleFile): TlsMaterial {
  const problems: Array<{ variable: string; message: string }> = [];
  const read = (field: keyof ServerTlsFiles) => {
    try {
      return readFileSync(files[field]);
    } catch (error) {
      problems.push({
        variable: serverTlsVariables[field],
        message: `cannot read ${files[field]}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      });
      return undefined;
    }
  };
  const ca = read('clientCaFile');
  const cert = read('certFile');
  const key = read('keyFile');
  const parse = <T>(field: keyof ServerTlsFiles, what: string, run: () => T): T | undefined => {
    try {
      return run();
    } catch (error) {
      problems.push({
        variable: serverTlsVariables[field],
        message: `${files[field]} is not ${what}: ${error instanceof Error ? error.message : String(error)}`,
      });
      return undefined;
    }
  };
  const authority = ca && parse('clientCaFile', 'a PEM certificate', () => new X509Certificate(ca));
  if (authority && !authority.ca)
    problems.push({
      variable: serverTlsVariables.clientCaFile,
      message: `${files.clientCaFile} is not a CA certificate`,
    });
  const certificate = cert && parse('certFile', 'a PEM certificate', () => new X509Certificate(cert));
  const privateKey = key && parse('keyFile', 'an unencrypted PEM private key', () => createPrivateKey(key));
  if (certificate && privateKey && !certificate.checkPrivateKey(privateKey))
    problems.push({
      variable: serverTlsVariables.keyFile,
      message: `${files.keyFile} is not the key of ${files.certFile}`,
    });
  let bundle: Buffer | undefined;
  if (meshBundle) {
    try {
      bundle = readFileSync(meshBundle.file);
      if (pemCertificates(bundle).length === 0) throw new Error('no PEM certificate in it');
      for (const pem of pemCertificates(bundle)) new X509Certificate(pem);
    } catch (error) {
      problems.push({
        variable: meshBundle.variable,
        message: `${meshBundle.file}: ${(error as NodeJS.ErrnoException).code ?? (error instanceof Error ? error.message : String(error))}`,
      });
    }
  }
  if (problems.length > 0 || !ca || !cert || !key) throw new ConfigError(problems);
  const channelAuthorities = pemCertificates(ca).map((pem) => new X509Certificate(pem));
  return {
    ca: bundle ? Buffer.concat([ca, Buffer.from('\n'), bundle]) : ca,
    cert,
    key,
    channelAuthorities,
  };
}

const contextOptions = (material: TlsMaterial) => ({ ca: material.ca, cert: material.cert, key: material.key });

/**
 * grpc-js server credentials that demand a client certificate (`requestCert` and
 * `rejectUnauthorized`: no certificate, or one the client CA did not sign, fails the handshake)
 * and push re-read files to the listening server (grpc-js calls setSecureContext, which applies
 * to new connections; open streams keep theirs).
 */
class ReloadingServerCredentials extends ServerCredentials {
  constructor(material: TlsMaterial) {
    super({ requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, contextOptions(material));
  }

  replace(material: TlsMaterial): void {
    this.updateSecureContextOptions(contextOptions(material));
  }

  _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

export interface ServerTls {
  credentials: ServerCredentials;
  /** The client CA file's certificates now served (what signs control channel identities). */
  channelAuthorities(): readonly X509Certificate[];
  /** Stops polling the files. */
  close(): void;
}

/**
 * The credentials, polling the files' stat every `pollIntervalMs` (default 2 s) for changes;
 * with `meshBundle`, the handshake trusts that file's certificates too (re-read the same way).
 */
export function createServerTls(
  files: ServerTlsFiles,
  {
    logger,
    pollIntervalMs = 2_000,
    meshBundle,
  }: { logger: Logger; pollIntervalMs?: number; meshBundle?: MeshBundleFile },
): ServerTls {
  const log = logger.child({ category: 'technical', component: 'control-channel' });
  let material = readServerTls(files, meshBundle);
  const credentials = new ReloadingServerCredentials(material);
  const watched = [...Object.values(files), ...(meshBundle ? [meshBundle.file] : [])];
  const stampOf = () => filesStamp(watched);
  let stamp = stampOf();
  const reload = () => {
    try {
      const next = readServerTls(files, meshBundle);
      credentials.replace(next);
      material = next;
      log.info({ event_type: 'control_channel_certificate_reloaded' }, 'control channel certificate files reloaded');
    } catch (error) {
      // A half-written pair or a wrong key: keep serving the last good one.
      log.error(
        { event_type: 'control_channel_certificate_invalid', error_details: String(error) },
        'control channel certificate files changed but are not usable; keeping the previous ones',
      );
    }
  };
  const onChange = () => {
    const now = stampOf();
    if (now === stamp) return;
    stamp = now;
    reload();
  };
  for (const file of watched) watchFile(file, { interval: pollIntervalMs, persistent: false }, onChange);
  return {
    credentials,
    channelAuthorities: () => material.channelAuthorities,
    close: () => {
      for (const file of watched) unwatchFile(file, onChange);
    },
  };
}
