import { createServer, type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@sekisho/service-kit/logger';

// The service behind the gateway in local runs and end-to-end tests: it answers every
// request with what it received, so a test can see exactly what Envoy forwarded (the
// rewritten path, the identity headers ext-authz added, the client copies removed).

export interface DemoUpstreamOptions {
  /** Service name reported in every answer ("customer", "appointment"…). */
  name: string;
  host?: string;
  /** 0 picks a free port. */
  port: number;
  logger?: Logger;
  /** Largest request body read (default 1 MiB); larger bodies get 413. */
  maxBodyBytes?: number;
  /**
   * A service that calls another (the mesh's customer → appointment): a request whose path
   * starts with `prefix` is sent on to `url` (the sidecar's outbound listener) with the rest of
   * the path and the `host` header naming the callee; the end user's identity headers, the
   * correlation id and X-Forwarded-For go with it. Answered with `{ service, called }`: the
   * callee's status and body.
   */
  calls?: { prefix: string; url: string; host: string };
}

/** Forwarded on a call to another service: who the end user is and which request this is. */
const forwardedHeaders = (name: string) =>
  name.startsWith('x-sekisho-') || name === 'x-request-id' || name === 'x-forwarded-for';

/** One plain-HTTP request (node:http, so the Host header is the one given). */
function call(url: string, method: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

/** What a service that calls another answers: the callee's status and its answer. */
export interface CallResponse {
  service: string;
  called: { status: number; body: unknown };
}

/** What the upstream answers with for anything but /health. */
export interface EchoResponse {
  service: string;
  /** host:port of the instance that answered (several may serve one service). */
  instance: string;
  method: string;
  /** The path exactly as received, without the query string (no decoding, no normalising). */
  path: string;
  query: Record<string, string | string[]>;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A fault the next requests get instead of the echo, for retry/timeout/outlier tests. */
export interface DemoFault {
  /** Status to answer with (default 200: the echo, only delayed). */
  status?: number;
  /** Delay before answering. */
  delayMs?: number;
  /** How many requests get the fault (default: all until cleared). /health is never faulted. */
  count?: number;
}

export interface DemoUpstream {
  readonly port: number;
  readonly url: string;
  /** Requests received so far (health checks excluded). */
  requests(): number;
  setFault(fault: DemoFault | null): void;
  /** Stops accepting, lets in-flight requests finish (up to graceMs, default 5000), then closes. */
  close(graceMs?: number): Promise<void>;
}

export async function startDemoUpstream(opts: DemoUpstreamOptions): Promise<DemoUpstream> {
  const host = opts.host ?? '127.0.0.1';
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024;
  let received = 0;
  let fault: (DemoFault & { remaining: number }) | null = null;
  let instance = '';
  let closing = false;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<number> => {
    const raw = req.url ?? '/';
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    if (req.method === 'GET' && path === '/health') {
      return send(res, 200, { status: 'ok', service: opts.name }, closing);
    }
    received++;
    const body = await readBody(req, maxBody);
    if (body === undefined) return send(res, 413, { error: 'body too large', limit: maxBody }, closing);
    const calls = opts.calls;
    if (calls && path.startsWith(calls.prefix)) {
      const headers: Record<string, string> = { host: calls.host };
      for (const [name, value] of Object.entries(req.headers)) {
        if (forwardedHeaders(name) && typeof value === 'string') headers[name] = value;
      }
      const answer = await call(`${calls.url}/${raw.slice(calls.prefix.length)}`, req.method ?? 'GET', headers);
      const text = answer.body;
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // Not JSON (Envoy's own plain-text replies): passed on as text.
      }
      const called: CallResponse = { service: opts.name, called: { status: answer.status, body: parsed } };
      return send(res, 200, called, closing);
    }

    let status = 200;
    // This request's fault, taken now: setFault() during the delay must not change it.
    const taken = fault && fault.remaining > 0 ? fault : null;
    if (taken) {
      taken.remaining--;
      if (taken.delayMs) await new Promise((r) => setTimeout(r, taken.delayMs));
      status = taken.status ?? 200;
    }
    const echo: EchoResponse = {
      service: opts.name,
      instance,
      method: req.method ?? '',
      path,
      query: parseQuery(q >= 0 ? raw.slice(q + 1) : ''),
      headers: req.headers,
      body,
    };
    return send(res, status, echo, closing);
  };

  const server = createServer((req, res) => {
    const started = performance.now();
    handle(req, res).then(
      (status) => {
        opts.logger?.debug(
          {
            category: 'technical',
            event_type: 'upstream_request',
            correlation_id: req.headers['x-request-id'],
            method: req.method,
            endpoint: req.url,
            status_code: status,
            response_time: Math.round(performance.now() - started),
          },
          'request',
        );
      },
      (err: unknown) => {
        opts.logger?.error({ category: 'technical', error_details: String(err) }, 'request failed');
        if (!res.headersSent) res.writeHead(500).end();
      },
    );
  });
  // Node closes idle keep-alive connections after 5 s by default, and Envoy, whose pool keeps
  // them for an hour, can send a request on one just as it closes: a spurious 503. Here the
  // proxy in front decides when an idle connection ends.
  server.keepAliveTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  instance = `${host}:${port}`;

  return {
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    requests: () => received,
    setFault: (f) => {
      fault = f ? { ...f, remaining: f.count ?? Number.POSITIVE_INFINITY } : null;
    },
    close: (graceMs = 5000) =>
      new Promise<void>((resolve) => {
        closing = true;
        const force = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, payload: unknown, closing: boolean): number {
  const body = JSON.stringify(payload);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    // While closing, end keep-alive connections after their answer instead of waiting for them.
    ...(closing ? { connection: 'close' } : {}),
  });
  res.end(body);
  return status;
}

/**
 * The body, or undefined as soon as it passes the limit. An early answer (413) must not end
 * the stream: destroying the request (what breaking out of `for await` does) leaves Node's
 * socket paused with the rest of the body unread, while the 413 still says keep-alive, so
 * the proxy in front puts the connection back in its pool and the next request on it (any
 * user's) is never answered. The rest of an oversized body is read and dropped instead
 * (RFC 9112 §9.6), which keeps the connection usable; the gateway's own body limit bounds it.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.off('end', onEnd);
      req.resume(); // drain: keep the parser going to the end of this request
      resolve(undefined);
    };
    const onEnd = () => resolve(Buffer.concat(chunks).toString('utf8'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.once('error', reject);
  });
}

function parseQuery(query: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of new URLSearchParams(query)) {
    const prev = out[key];
    out[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}
