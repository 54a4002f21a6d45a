import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStackLogsOnFailure, writeDefinitionFile } from './support';

// Every answer Envoy itself gives is the reference design's JSON error body, provoked for
// real: malformed requests over a raw socket, HTTP/1.0, slow headers, unknown paths and
// methods, and upstreams that are down, broken or silent. ext-authz's own denials and the
// services' own answers are left as they were written.

let stack: Stack;
let dir: string;
let definitionFile: string;
/** Upstreams the demo upstream cannot play: one that answers garbage, one that never answers. */
const servers: Server[] = [];
const sockets = new Set<Socket>();

function tcpServer(onConnection: (socket: Socket) => void): Promise<number> {
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onConnection(socket);
  });
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

async function writeDefinition(content: unknown) {
  await writeDefinitionFile(definitionFile, content);
}

beforeAll(async () => {
  const [gateway, customer, extAuthz, rateLimit, down] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  dir = await mkdtemp(join(tmpdir(), 'sekisho-replies-'));
  definitionFile = join(dir, 'gateway.yaml');
  const base = {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-replies' },
      groupClaim: 'tier',
      groups: { member: ['read:own_profile', 'update:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s' },
    },
    services: { customer: { endpoints: [`127.0.0.1:${customer}`] } } as Record<string, unknown>,
    edge: { maxRequestBodyBytes: 1024 },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      { match: 'PUT /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['update:own_profile'] },
      { match: '/api/v1/public/*', to: 'customer', auth: 'none' },
    ] as unknown[],
  };
  await writeDefinition(base);
  // The stack starts a demo upstream for every endpoint of the first definition; the broken
  // services are added afterwards, pointing at servers of this test (or at nothing).
  stack = await startStack({ definitionFile });

  const garbage = await tcpServer((socket) => {
    socket.once('data', () => socket.end('this is not HTTP\r\n\r\n'));
  });
  const silent = await tcpServer(() => {});
  base.services = {
    ...base.services,
    broken: { endpoints: [`127.0.0.1:${garbage}`] },
    silent: { endpoints: [`127.0.0.1:${silent}`], timeout: '1s' },
    down: { endpoints: [`127.0.0.1:${down}`] },
  };
  base.routes = [
    ...base.routes,
    { match: 'GET /api/v1/broken', to: 'broken', auth: 'none' },
    { match: 'GET /api/v1/silent', to: 'silent', auth: 'none' },
    { match: 'GET /api/v1/down', to: 'down', auth: 'none' },
  ];
  await writeDefinition(base);
  const deadline = Date.now() + 30_000;
  while ((await fetch(`${stack.gatewayUrl}/api/v1/down`)).status === 404) {
    if (Date.now() > deadline) throw new Error('the routes to the broken services never arrived');
    await new Promise((r) => setTimeout(r, 200));
  }
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.map((server) => new Promise((r) => server.close(r))));
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack, 60);

interface RawAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Writes bytes as they are (no client library to tidy them up) and reads the one answer. */
function raw(request: string, timeoutMs = 30_000): Promise<RawAnswer> {
  const url = new URL(stack.gatewayUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within ${timeoutMs} ms; got ${JSON.stringify(received.toString())}`));
    }, timeoutMs);
    const tryParse = () => {
      const text = received.toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
      const headers = new Map(
        lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]),
      );
      const length = Number(headers.get('content-length') ?? Number.NaN);
      const body = Buffer.from(text.slice(end + 4), 'utf8');
      if (Number.isNaN(length) || body.length < length) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: body.subarray(0, length).toString('utf8') });
    };
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      tryParse();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`connection closed; got ${JSON.stringify(received.toString())}`));
    });
    socket.write(request);
  });
}

async function get(path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawAnswer> {
  const response = await fetch(`${stack.gatewayUrl}${path}`, { method, headers });
  return { status: response.status, headers: new Map(response.headers), body: await response.text() };
}

function expectJsonError(
  answer: RawAnswer,
  status: number,
  code: string,
  message?: string,
  opts: { beforeHeaders?: boolean } = {},
) {
  expect(answer.status, answer.body).toBe(status);
  expect(answer.headers.get('content-type')).toBe('application/json; charset=utf-8');
  const body = JSON.parse(answer.body);
  expect(body).toEqual({
    success: false,
    error: {
      code,
      message: expect.any(String),
      // null only where Envoy refused the request before it had headers to give it an id.
      correlation_id: opts.beforeHeaders ? null : expect.stringMatching(/^[0-9a-f-]{36}$/),
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
    },
    data: null,
  });
  if (message !== undefined) expect(body.error.message).toBe(message);
  // The correlation id is the x-request-id of the logs, where Envoy got far enough to make one.
  const requestId = answer.headers.get('x-request-id');
  if (requestId !== undefined) expect(body.error.correlation_id).toBe(requestId);
}

describe("Envoy's own answers in the reference JSON format", () => {
  it('400 BAD_REQUEST for a malformed request', async () => {
    showLogsOnFailure();
    expectJsonError(
      await raw('GET /api/v1/public/x HTTP/1.1\r\nHost: gateway\r\nContent-Length: ten\r\n\r\n'),
      400,
      'BAD_REQUEST',
      'リクエストの形式が正しくありません',
      { beforeHeaders: true },
    );
  });

  it('404 NOT_FOUND for a path no route serves, in Japanese by default and English on request', async () => {
    showLogsOnFailure();
    expectJsonError(await get('/api/v1/nowhere'), 404, 'NOT_FOUND', '指定されたリソースが見つかりません');
    expectJsonError(
      await get('/api/v1/nowhere', { 'accept-language': 'en-US,en;q=0.9,ja;q=0.5' }),
      404,
      'NOT_FOUND',
      'The requested resource was not found.',
    );
  });

  it('405 METHOD_NOT_ALLOWED with Allow for a path served only for other methods', async () => {
    showLogsOnFailure();
    const answer = await get('/api/v1/customer/profile', {}, 'DELETE');
    expectJsonError(answer, 405, 'METHOD_NOT_ALLOWED');
    expect(answer.headers.get('allow')).toBe('GET, PUT');
  });

  it('408 REQUEST_TIMEOUT when the request headers do not arrive in time', async () => {
    showLogsOnFailure();
    // Envoy's request_headers_timeout is 10 s; the request line and one header, then nothing.
    expectJsonError(
      await raw('GET /api/v1/public/x HTTP/1.1\r\nHost: gateway\r\n', 40_000),
      408,
      'REQUEST_TIMEOUT',
      undefined,
      { beforeHeaders: true },
    );
  });

  it('413 PAYLOAD_TOO_LARGE for a body over the limit', async () => {
    showLogsOnFailure();
    expectJsonError(
      await raw('POST /api/v1/public/x HTTP/1.1\r\nHost: gateway\r\nContent-Length: 5000\r\n\r\n'),
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });

  it('426 UPGRADE_REQUIRED for HTTP/1.0', async () => {
    showLogsOnFailure();
    expectJsonError(
      await raw('GET /api/v1/public/x HTTP/1.0\r\nHost: gateway\r\n\r\n'),
      426,
      'UPGRADE_REQUIRED',
      'HTTP/1.1 以降でリクエストしてください',
      { beforeHeaders: true },
    );
  });

  it('502 BAD_GATEWAY when the service answers something that is not HTTP', async () => {
    showLogsOnFailure();
    expectJsonError(await get('/api/v1/broken'), 502, 'BAD_GATEWAY');
  });

  it('503 SERVICE_UNAVAILABLE when the service is down', async () => {
    showLogsOnFailure();
    expectJsonError(await get('/api/v1/down', { 'accept-language': 'en' }), 503, 'SERVICE_UNAVAILABLE');
  });

  it('504 GATEWAY_TIMEOUT when the service does not answer within its timeout', async () => {
    showLogsOnFailure();
    expectJsonError(await get('/api/v1/silent'), 504, 'GATEWAY_TIMEOUT', '上流サービスの応答がタイムアウトしました');
  });
});

describe('answers that are not Envoy’s own stay as written', () => {
  it("keeps ext-authz's 401 body and language", async () => {
    showLogsOnFailure();
    const answer = await get('/api/v1/customer/profile', { 'accept-language': 'en' });
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.body).error).toMatchObject({
      code: 'MISSING_TOKEN',
      message: 'An access token is required.',
    });
  });

  it("keeps the service's own answer", async () => {
    showLogsOnFailure();
    const answer = await get('/api/v1/public/echo');
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ service: 'customer', path: '/api/v1/public/echo' });
  });
});
