import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from './logger';
import { answerAdminOverIpc, currentWorker } from './workers';

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

// The operator's door into a service: liveness, readiness, Prometheus metrics and
// the state it runs with (policy version and the like). Never on the data-plane port.
export async function startAdminServer(opts: {
  host?: string;
  port: number;
  registry: Registry;
  logger: Logger;
  isReady: () => boolean;
  /** Added to /readyz's body: what a dependency's state is, whether or not it makes the service unready. */
  readyDetails?: () => Record<string, unknown>;
  status: () => Record<string, unknown>;
  /**
   * Asked for every request except /healthz, /readyz and /metrics (which stay open for probes
   * and Prometheus): false answers 401 with nothing of the service's state. Omitted: all open.
   */
  authenticate?: (request: FastifyRequest) => boolean;
  /** More routes on the same server (behind `authenticate` like /status). */
  routes?: (app: FastifyInstance) => void;
}): Promise<AdminServer> {
  // A worker of several (SEKISHO_WORKERS): the primary holds the port and asks each worker.
  if (currentWorker()) {
    const ipc = answerAdminOverIpc(opts);
    return { port: opts.port, close: async () => ipc.close() };
  }
  const app = Fastify({ logger: false });
  const authenticate = opts.authenticate;
  if (authenticate) {
    const open = new Set(['/healthz', '/readyz', '/metrics']);
    app.addHook('onRequest', async (request, reply) => {
      if (open.has(request.url.split('?', 1)[0] ?? '')) return;
      if (authenticate(request)) return;
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized' });
    });
  }
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const ready = opts.isReady();
    const details = opts.readyDetails?.();
    return reply
      .code(ready ? 200 : 503)
      .send({ status: ready ? 'ready' : 'not ready', ...(details ? { details } : {}) });
  });
  app.get('/metrics', async (_request, reply) => {
    return reply.header('content-type', opts.registry.contentType).send(await opts.registry.metrics());
  });
  app.get('/status', async () => opts.status());
  opts.routes?.(app);
  await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  opts.logger.info({ category: 'technical', event_type: 'admin_listening', port }, 'admin server listening');
  return { port, close: () => app.close() };
}

export type { FastifyInstance as AdminApp, FastifyRequest as AdminRequest } from 'fastify';
