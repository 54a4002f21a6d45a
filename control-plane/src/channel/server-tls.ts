import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { ServerCredentials } from '@grpc/grpc-js';
import { ConfigError } from '@sekisho/service-kit/config';
import type { Logger } from '@sekisho/service-kit/logger';
import { filesStamp } from '@sekisho/service-kit/xds-channel';

// The control plane's side of the control channel: TLS that requires a client certificate
// signed by the client CA (a client without one is refused in the handshake, before any gRPC),
// with the three files re-read when they change, so a rotated certificate (cert-manager, a
// Kubernetes secret's `..data` symlink swap) is served to new connections without a restart.

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

interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Reads and checks the files; a ConfigError names the variable of each bad one. */
export function readServerTls(files: ServerTlsFiles): TlsMaterial {
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
  if (problems.length > 0 || !ca || !cert || !key) throw new ConfigError(problems);
  return { ca, cert, key };
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
  /** Stops polling the files. */
  close(): void;
}

/** The credentials, polling the files' stat every `pollIntervalMs` (default 2 s) for changes. */
export function createServerTls(
  files: ServerTlsFiles,
  { logger, pollIntervalMs = 2_000 }: { logger: Logger; pollIntervalMs?: number },
): ServerTls {
  const log = logger.child({ category: 'technical', component: 'control-channel' });
  const credentials = new ReloadingServerCredentials(readServerTls(files));
  const stampOf = () => filesStamp(Object.values(files));
  let stamp = stampOf();
  const reload = () => {
    try {
      credentials.replace(readServerTls(files));
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
  for (const file of Object.values(files)) watchFile(file, { interval: pollIntervalMs, persistent: false }, onChange);
  return {
    credentials,
    close: () => {
      for (const file of Object.values(files)) unwatchFile(file, onChange);
    },
  };
}
