import { X509Certificate } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Logger } from '@sekisho/service-kit/logger';

// The webhook's serving certificate from two PEM files, re-read when they change: cert-manager
// renews the Secret, the kubelet swaps the mounted volume's ..data symlink, and new handshakes
// get the new pair with no restart. A half-written or mismatched pair is refused and the last
// good one keeps serving.

export interface KeyPair {
  cert: string;
  key: string;
  /** The leaf certificate's notAfter, seconds since the epoch. */
  notAfter: number;
}

/** Reads and checks a pair; throws an error naming the file. */
export async function readKeyPair(certFile: string, keyFile: string): Promise<KeyPair> {
  const cert = await readFile(certFile, 'utf8').catch((e: Error) => {
    throw new Error(`INJECTOR_TLS_CERT_FILE: cannot read ${certFile}: ${e.message}`);
  });
  const key = await readFile(keyFile, 'utf8').catch((e: Error) => {
    throw new Error(`INJECTOR_TLS_KEY_FILE: cannot read ${keyFile}: ${e.message}`);
  });
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (e) {
    throw new Error(`INJECTOR_TLS_CERT_FILE: ${certFile} is not a PEM certificate: ${(e as Error).message}`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new Error(`INJECTOR_TLS_KEY_FILE: ${keyFile} does not fit ${certFile}: ${(e as Error).message}`);
  }
  return { cert, key, notAfter: Math.floor(new Date(leaf.validTo).getTime() / 1000) };
}

export interface KeyPairWatcher {
  stop(): void;
}

/** Calls onChange with every new good pair; polls besides fs.watch, which misses some volume updates. */
export function watchKeyPair(opts: {
  certFile: string;
  keyFile: string;
  current: KeyPair;
  pollIntervalMs: number;
  logger: Logger;
  onChange: (pair: KeyPair) => void;
}): KeyPairWatcher {
  let last = opts.current;
  let lastError = '';
  let running = false;
  let again = false;
  const check = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        try {
          const pair = await readKeyPair(opts.certFile, opts.keyFile);
          lastError = '';
          if (pair.cert === last.cert && pair.key === last.key) continue;
          last = pair;
          opts.onChange(pair);
          opts.logger.info(
            {
              category: 'security',
              event_type: 'webhook_certificate_reloaded',
              not_after: new Date(pair.notAfter * 1000).toISOString(),
            },
            'webhook certificate reloaded',
          );
        } catch (error) {
          const message = (error as Error).message;
          if (message !== lastError)
            opts.logger.warn(
              { category: 'security', event_type: 'webhook_certificate_refused', error_details: message },
              'new webhook certificate refused; the previous one keeps serving',
            );
          lastError = message;
        }
      } while (again);
    } finally {
      running = false;
    }
  };
  const watchers: FSWatcher[] = [];
  for (const dir of new Set([dirname(opts.certFile), dirname(opts.keyFile)])) {
    try {
      const watcher = watch(dir, () => void check());
      watcher.on('error', () => {});
      watchers.push(watcher);
    } catch {
      // The poll below still sees changes.
    }
  }
  const timer = setInterval(() => void check(), opts.pollIntervalMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
