import { X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { Logger } from '@sekisho/service-kit/logger';

// The control channel CA (INJECTOR_XDS_CA_FILE): in csi mode the sidecar's trust anchor for the
// control plane's server certificate, put inline in every bootstrap the injector writes (the
// CSI volume carries the pod's own certificate, and at most the mesh bundle as ca.crt, not this
// CA). Re-read when the file changes; an unusable change is refused and the last good PEM kept.

/** Reads and checks the file: PEM CA certificates only; throws naming the variable. */
export function readXdsCa(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`INJECTOR_XDS_CA_FILE: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`INJECTOR_XDS_CA_FILE: ${file} holds no PEM certificate`);
  for (const block of blocks) {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(block);
    } catch (error) {
      throw new Error(`INJECTOR_XDS_CA_FILE: ${file} is not PEM certificates: ${(error as Error).message}`);
    }
    if (!certificate.ca) throw new Error(`INJECTOR_XDS_CA_FILE: ${file}: ${certificate.subject} is not a CA`);
  }
  return `${blocks.join('\n')}\n`;
}

export interface XdsCa {
  /** The PEM current now. */
  pem(): string;
  stop(): void;
}

/** The CA file, polled every `pollIntervalMs`. */
export function watchXdsCa(file: string, opts: { pollIntervalMs: number; logger: Logger }): XdsCa {
  let current = readXdsCa(file);
  const onChange = () => {
    try {
      const next = readXdsCa(file);
      if (next === current) return;
      current = next;
      opts.logger.info(
        { category: 'security', event_type: 'xds_ca_reloaded' },
        'control channel CA reloaded: new sidecars get it',
      );
    } catch (error) {
      opts.logger.warn(
        { category: 'security', event_type: 'xds_ca_refused', error_details: (error as Error).message },
        'new control channel CA refused; the previous one keeps being injected',
      );
    }
  };
  watchFile(file, { interval: opts.pollIntervalMs, persistent: false }, onChange);
  return {
    pem: () => current,
    stop: () => unwatchFile(file, onChange),
  };
}
