import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@sekisho/service-kit/logger';
import type { InjectorConfig } from './config';
import type { InjectorMetrics } from './metrics';
import { handleReview } from './review';
import { type KeyPairWatcher, readKeyPair, watchKeyPair } from './tls-files';
import { watchXdsCa, type XdsCa } from './xds-ca';

// The webhook's HTTPS endpoint: POST /inject with an AdmissionReview (JSON). Bounded bodies
// and request times; anything else is answered with a status and a one-line reason.

export const webhookPath = '/inject';
/** The API server sends at most a few MiB (an object in etcd is ≤ 1.5 MiB); more is refused. */
const maxBodyBytes = 8 * 1024 * 1024;

export interface WebhookServer {
  port: number;
  close(): Promise<void>;
}

export async function startWebhookServer(
  config: InjectorConfig,
  deps: { logger: Logger; metrics: InjectorMetrics },
): Promise<WebhookServer> {
  const { logger, metrics } = deps;
  const pair = await readKeyPair(config.INJECTOR_TLS_CERT_FILE, config.INJECTOR_TLS_KEY_FILE);
  // csi mode: the control channel CA every bootstrap carries inline (secret mode reads the Secret's).
  const xdsCa: XdsCa | undefined = config.INJECTOR_XDS_CA_FILE
    ? watchXdsCa(config.INJECTOR_XDS_CA_FILE, { pollIntervalMs: config.INJECTOR_TLS_POLL_INTERVAL, logger })
    : undefined;
  metrics.certificateExpiry.set(pair.notAfter);
  const server: Server = createServer(
    { cert: pair.cert, key: pair.key, minVersion: 'TLSv1.2', requestTimeout: 10_000, headersTimeout: 5_000 },
    (request, response) => {
      const reply = (status: number, body: unknown) => {
        const text = JSON.stringify(body);
        response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        response.end(text);
      };
      const url = (request.url ?? '').split('?')[0];
      if (url !== webhookPath) return reply(404, { error: `not found: the webhook is POST ${webhookPath}` });
      if (request.method !== 'POST') return reply(405, { error: `method ${request.method}: expected POST` });
      const type = request.headers['content-type'] ?? '';
      if (!/^application\/json\b/i.test(type)) {
        metrics.reviews.inc({ outcome: 'malformed' });
        return reply(415, { error: `content-type ${JSON.stringify(type)}: expected application/json` });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      request.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBodyBytes) {
          if (!tooLarge) {
            tooLarge = true;
            metrics.reviews.inc({ outcome: 'malformed' });
            reply(413, { error: `body larger than ${maxBodyBytes} bytes` });
            request.resume();
          }
          return;
        }
        chunks.push(chunk);
      });
      request.on('error', () => {});
      request.on('end', () => {
        if (tooLarge) return;
        const result = handleReview(
          Buffer.concat(chunks).toString('utf8'),
          config,
          xdsCa ? { caPem: xdsCa.pem() } : {},
        );
        metrics.reviews.inc({ outcome: result.outcome });
        const log = result.outcome === 'malformed' || result.outcome === 'denied' ? logger.warn : logger.info;
        log.call(
          logger,
          {
            category: 'technical',
            event_type: `admission_${result.outcome}`,
            detail: result.detail,
            dry_run: result.dryRun,
          },
          `admission review ${result.outcome}`,
        );
        reply(result.status, result.body);
      });
    },
  );
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve, reject) => {
    const failed = (error: Error) => {
      xdsCa?.stop();
      reject(error);
    };
    server.once('error', failed);
    server.listen(config.INJECTOR_PORT, config.INJECTOR_HOST, () => {
      server.off('error', failed);
      resolve();
    });
  });
  const watcher: KeyPairWatcher = watchKeyPair({
    certFile: config.INJECTOR_TLS_CERT_FILE,
    keyFile: config.INJECTOR_TLS_KEY_FILE,
    current: pair,
    pollIntervalMs: config.INJECTOR_TLS_POLL_INTERVAL,
    logger,
    onChange: (next) => {
      server.setSecureContext({ cert: next.cert, key: next.key, minVersion: 'TLSv1.2' });
      metrics.certificateExpiry.set(next.notAfter);
      metrics.certificateReloads.inc();
    },
  });
  const port = (server.address() as AddressInfo).port;
  logger.info({ category: 'technical', event_type: 'webhook_listening', port }, 'webhook listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        watcher.stop();
        xdsCa?.stop();
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
