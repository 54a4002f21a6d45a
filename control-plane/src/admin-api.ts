import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AdminApp, AdminRequest } from '@sekisho/service-kit/admin-server';
import { ConfigError } from '@sekisho/service-kit/config';
import type { Logger } from '@sekisho/service-kit/logger';
import type { GatewayIR } from './ir/types';
import { redactSecrets } from './redact';
import { renderAny } from './translate/any';
import type { SnapshotCache } from './xds/cache';
import type { StreamStatus } from './xds/connections';
import { typeLabel } from './xds/metrics';
import { pushOrder } from './xds/type-urls';

// The operator's API on the control plane's admin port, next to /healthz, /readyz, /metrics
// and /status: the connected proxies, the IR served now, each view's resources. Read-only.
// Off loopback it needs a bearer token (CONTROL_PLANE_ADMIN_TOKEN_FILE); /healthz, /readyz and
// /metrics stay open for the kubelet and Prometheus.

export const adminTokenVariable = 'CONTROL_PLANE_ADMIN_TOKEN_FILE';

const digest = (text: string) => createHash('sha256').update(text).digest();

/** The token in `file` (surrounding whitespace dropped); a ConfigError naming the variable when unusable. */
export function readAdminToken(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ConfigError([{ variable: adminTokenVariable, message: `cannot read ${file}: ${reason}` }]);
  }
  const token = text.trim();
  if (token.length < 16) {
    const problem = token.length === 0 ? 'empty' : 'shorter than 16 characters';
    throw new ConfigError([{ variable: adminTokenVariable, message: `the token in ${file} is ${problem}` }]);
  }
  if (/\s/.test(token)) {
    throw new ConfigError([{ variable: adminTokenVariable, message: `the token in ${file} contains whitespace` }]);
  }
  return token;
}

/**
 * Checks `Authorization: Bearer <token>` against the token file, re-read on every request so a
 * rotated Secret applies without a restart; an unreadable file refuses everyone (fail closed).
 * Compared as SHA-256 digests with timingSafeEqual: constant time, whatever the lengths.
 */
export function bearerAuthenticator(file: string, logger: Logger): (request: AdminRequest) => boolean {
  let warned = false;
  return (request) => {
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer ([^\s]+)$/i.exec(header.trim()) : null;
    let token: string;
    try {
      token = readAdminToken(file);
      warned = false;
    } catch (error) {
      if (!warned) {
        logger.error(
          { category: 'security', event_type: 'admin_token_unreadable', error_details: (error as Error).message },
          'admin API token unreadable: refusing every authenticated request',
        );
        warned = true;
      }
      return false;
    }
    const ok = match?.[1] !== undefined && timingSafeEqual(digest(match[1]), digest(token));
    if (!ok) {
      logger.warn(
        {
          category: 'security',
          event_type: 'admin_unauthorized',
          path: request.url.split('?', 1)[0],
          reason: match ? 'wrong token' : header === undefined ? 'no token' : 'not a bearer token',
          remote: request.ip,
        },
        'admin API request refused',
      );
    }
    return ok;
  };
}

/** One connected proxy as the API shows it: types by short name, in push order. */
export function proxyOf(stream: StreamStatus) {
  return {
    stream: stream.stream,
    nodeId: stream.nodeId ?? null,
    nodeCluster: stream.nodeCluster ?? null,
    view: stream.view ?? null,
    known: stream.known,
    variant: stream.variant,
    service: stream.service,
    peer: stream.peer,
    connectedAt: stream.connectedAt,
    types: Object.fromEntries(
      Object.entries(stream.types).map(([typeUrl, t]) => [
        typeLabel(typeUrl),
        {
          subscribed: t.subscribed,
          sentVersion: t.sentVersion ?? null,
          ackedVersion: t.ackedVersion ?? null,
          ackedAt: t.ackedAt ?? null,
          lastNack: t.lastNack ?? null,
        },
      ]),
    ),
  };
}

export function registerAdminApi(
  app: AdminApp,
  deps: {
    cache: SnapshotCache;
    views: readonly string[];
    proxies: () => StreamStatus[];
    ir: () => GatewayIR | undefined;
    unconverged: () => string[];
  },
): void {
  const typeByName = new Map(pushOrder.map((typeUrl) => [typeLabel(typeUrl), typeUrl]));
  app.get('/api/v1/proxies', async () => ({ proxies: deps.proxies().map(proxyOf) }));
  app.get('/api/v1/ir', async (_request, reply) => {
    const ir = deps.ir();
    if (!ir) {
      return reply.code(503).send({
        error: 'no IR: the control plane serves a saved definition (the file did not compile at start-up)',
      });
    }
    return redactSecrets(ir);
  });
  app.get('/api/v1/views', async () => ({
    views: deps.views.map((view) => ({
      view,
      versions: Object.fromEntries(
        Object.entries(deps.cache.versions(view)).map(([typeUrl, version]) => [typeLabel(typeUrl), version]),
      ),
      converged: !deps.unconverged().includes(view),
    })),
  }));
  app.get<{ Params: { view: string }; Querystring: { type?: string | string[] } }>(
    '/api/v1/views/:view/resources',
    async (request, reply) => {
      const { view } = request.params;
      if (!deps.views.includes(view)) {
        return reply.code(404).send({ error: `unknown view "${view}" (views: ${deps.views.join(', ')})` });
      }
      const asked = request.query.type === undefined ? [] : [request.query.type].flat();
      const unknown = asked.filter((name) => !typeByName.has(name));
      if (unknown.length > 0) {
        return reply
          .code(400)
          .send({ error: `type: unknown type "${unknown[0]}" (types: ${[...typeByName.keys()].join(', ')})` });
      }
      const types = asked.length === 0 ? pushOrder : pushOrder.filter((typeUrl) => asked.includes(typeLabel(typeUrl)));
      if (!deps.cache.hasSnapshot(view)) return reply.code(503).send({ error: `view "${view}" has no snapshot yet` });
      const resources = types.flatMap((typeUrl) => {
        const snapshot = deps.cache.get(typeUrl, view);
        return [...(snapshot?.resources.values() ?? [])]
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
          .map((r) => ({ type: typeLabel(typeUrl), name: r.name, resource: redactSecrets(renderAny(r.resource)) }));
      });
      const versions = Object.fromEntries(
        types.flatMap((typeUrl) => {
          const version = deps.cache.get(typeUrl, view)?.version;
          return version === undefined ? [] : [[typeLabel(typeUrl), version]];
        }),
      );
      return { view, versions, resources };
    },
  );
}
