import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// The browser-facing edge through the whole stack (a real Envoy configured over ADS, the real
// ext-authz and rate-limit services): CORS preflights answered by Envoy for every route,
// security headers on every answer (Envoy's own included), CSRF refusals in the JSON format,
// and compression as Accept-Encoding asks. Requests are sent with node:http, as curl would:
// fetch() would add and decode Accept-Encoding and forbid some of these headers.

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}

let stack: Stack;
let dir: string;
let gatewayOrigin: string;

const allowedOrigin = 'https://app.example';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-edge-browser-'));
  const definitionFile = join(dir, 'gateway.yaml');
  const [gateway, customer, appointment, extAuthz, rateLimit] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const definition = {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-e2e' },
      groupClaim: 'tier',
      groups: { member: ['read:own_profile', 'create:appointments'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
    },
    services: {
      customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' },
      appointment: { endpoints: [`127.0.0.1:${appointment}`], healthCheck: '/health' },
    },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      { match: 'POST /api/v1/appointments', to: 'appointment', require: ['create:appointments'] },
      { match: 'GET /api/v1/internal/stats', to: 'customer', require: ['read:own_profile'], cors: false },
      {
        match: '/api/v1/docs/*',
        to: 'customer',
        auth: 'none',
        securityHeaders: { contentSecurityPolicy: { 'default-src': ["'self'"] }, xFrameOptions: 'DENY' },
      },
      { match: '/api/v1/auth/*', to: 'customer', auth: 'none', limits: [{ per: 'ip', limit: 2, window: '1m' }] },
    ],
    edge: {
      cors: { allowOrigins: [allowedOrigin, 'https://*.example.com'], maxAge: '10m' },
      compression: { minLength: 1024 },
    },
  };
  await writeFile(definitionFile, stringify(definition));
  stack = await startStack({ definitionFile, logLevel: 'info' });
  gatewayOrigin = stack.gatewayUrl;
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack, 200);

/** One request as curl sends it: exactly these headers, the body bytes as they came. */
function send(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  const url = new URL(path, gatewayOrigin);
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes, text: bytes.toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

function preflight(path: string, origin: string, method: string) {
  return send('OPTIONS', path, {
    origin,
    'access-control-request-method': method,
    'access-control-request-headers': 'authorization',
  });
}

function corsHeaders(answer: Answer): string[] {
  return Object.keys(answer.headers).filter((name) => name.startsWith('access-control-'));
}

function errorCode(answer: Answer): string | undefined {
  return (JSON.parse(answer.text) as { error?: { code?: string } }).error?.code;
}

/** helmet's defaults with the reference design's CSP (HSTS only over HTTPS). */
const expectedSecurityHeaders = {
  'content-security-policy':
    "default-src 'self'; base-uri 'self'; font-src 'self' https://fonts.gstatic.com; form-action 'self'; " +
    "frame-ancestors 'self'; img-src 'self' data: https:; object-src 'none'; " +
    "script-src 'self' 'unsafe-inline' https://apis.google.com; script-src-attr 'none'; " +
    "style-src 'self' 'unsafe-inline'; upgrade-insecure-requests",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'SAMEORIGIN',
  'referrer-policy': 'no-referrer',
  'permissions-policy':
    'accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'origin-agent-cluster': '?1',
  'x-dns-prefetch-control': 'off',
  'x-download-options': 'noopen',
  'x-permitted-cross-domain-policies': 'none',
  'x-xss-protection': '0',
};

function expectSecurityHeaders(answer: Answer) {
  for (const [name, value] of Object.entries(expectedSecurityHeaders)) {
    expect(answer.headers[name], `${name} on a ${answer.status}`).toBe(value);
  }
  // A plain-HTTP listener: a browser would ignore HSTS here, and it must not be promised.
  expect(answer.headers['strict-transport-security']).toBeUndefined();
}

describe('CORS through a real Envoy', () => {
  it('answers a preflight for a GET-only route from an allowed origin (it was a 404)', async () => {
    showLogsOnFailure();
    const answer = await preflight('/api/v1/customer/profile', allowedOrigin, 'GET');
    expect(answer.status).toBe(200);
    expect(answer.headers['access-control-allow-origin']).toBe(allowedOrigin);
    expect(answer.headers['access-control-allow-methods']).toBe('GET, HEAD, POST, PUT, PATCH, DELETE');
    expect(answer.headers['access-control-allow-headers']).toBe('authorization, content-type');
    expect(answer.headers['access-control-max-age']).toBe('600');
    // Answered by Envoy before authentication: no token was needed, nothing was forwarded.
    expect(answer.text).toBe('');
  });

  it('answers a preflight for a POST route, and refuses one for a method no route serves', async () => {
    showLogsOnFailure();
    const post = await preflight('/api/v1/appointments', allowedOrigin, 'POST');
    expect(post.status).toBe(200);
    expect(post.headers['access-control-allow-origin']).toBe(allowedOrigin);

    const remove = await preflight('/api/v1/appointments', allowedOrigin, 'DELETE');
    expect(remove.status).toBe(403);
    expect(corsHeaders(remove)).toEqual([]);
    expect(errorCode(remove)).toBe('CORS_PREFLIGHT_REFUSED');
  });

  it('allows one label under a wildcard origin, and nothing that only looks like it', async () => {
    showLogsOnFailure();
    const sub = await preflight('/api/v1/customer/profile', 'https://shop.example.com', 'GET');
    expect(sub.status).toBe(200);
    expect(sub.headers['access-control-allow-origin']).toBe('https://shop.example.com');

    for (const origin of [
      'https://evil-example.com',
      'https://x.example.com.evil',
      'https://a.b.example.com',
      'http://shop.example.com',
      'https://app.example.evil',
      'null',
    ]) {
      const answer = await preflight('/api/v1/customer/profile', origin, 'GET');
      expect(answer.status, origin).toBe(403);
      expect(corsHeaders(answer), origin).toEqual([]);
      expect(answer.headers['content-type']).toContain('application/json');
      expect(errorCode(answer)).toBe('CORS_PREFLIGHT_REFUSED');
    }
  });

  it('refuses preflights for a route with cors: false', async () => {
    showLogsOnFailure();
    const answer = await preflight('/api/v1/internal/stats', allowedOrigin, 'GET');
    expect(answer.status).toBe(403);
    expect(corsHeaders(answer)).toEqual([]);
  });

  it('lets a non-preflight OPTIONS reach no upstream: a GET-only route answers 405 with Allow', async () => {
    showLogsOnFailure();
    const bare = await send('OPTIONS', '/api/v1/customer/profile', { origin: allowedOrigin });
    expect(bare.status).toBe(405);
    expect(bare.headers.allow).toBe('GET');
    expect(errorCode(bare)).toBe('METHOD_NOT_ALLOWED');
  });

  it('adds the CORS headers to an allowed origin’s answers (a 401 too, so a page can read it), none for others', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('cors-user', { group: 'member' });
    const ok = await send('GET', '/api/v1/customer/profile', {
      origin: allowedOrigin,
      authorization: `Bearer ${token}`,
    });
    expect(ok.status).toBe(200);
    expect(ok.headers['access-control-allow-origin']).toBe(allowedOrigin);
    expect(ok.headers['access-control-expose-headers']).toBe('x-request-id, retry-after');
    // The answer depends on Origin: a cache in front must keep one copy per origin.
    expect(String(ok.headers.vary)).toContain('Origin');

    const unauthorized = await send('GET', '/api/v1/customer/profile', { origin: allowedOrigin });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers['access-control-allow-origin']).toBe(allowedOrigin);

    const other = await send('GET', '/api/v1/customer/profile', {
      origin: 'https://evil.example',
      authorization: `Bearer ${token}`,
    });
    expect(other.status).toBe(200);
    expect(corsHeaders(other)).toEqual([]);
  });
});

describe('security headers through a real Envoy', () => {
  it('are on a 200, a 401 from ext-authz, a 404 without a route, a 429 and a preflight', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('headers-user', { group: 'member' });
    const ok = await send('GET', '/api/v1/customer/profile', { authorization: `Bearer ${token}` });
    expect(ok.status).toBe(200);
    expectSecurityHeaders(ok);

    const unauthorized = await send('GET', '/api/v1/customer/profile');
    expect(unauthorized.status).toBe(401);
    expect(errorCode(unauthorized)).toBe('MISSING_TOKEN');
    expectSecurityHeaders(unauthorized);

    const notFound = await send('GET', '/nowhere');
    expect(notFound.status).toBe(404);
    expectSecurityHeaders(notFound);

    const statuses: number[] = [];
    let limited: Answer | undefined;
    for (let i = 0; i < 5 && limited === undefined; i++) {
      const answer = await send('POST', '/api/v1/auth/login', {}, '{}');
      statuses.push(answer.status);
      if (answer.status === 429) limited = answer;
    }
    expect(limited, `statuses: ${statuses.join(', ')}`).toBeDefined();
    if (limited) {
      expect(errorCode(limited)).toBe('RATE_LIMIT_EXCEEDED');
      expectSecurityHeaders(limited);
    }

    expectSecurityHeaders(await preflight('/api/v1/customer/profile', allowedOrigin, 'GET'));
  });

  it('are on the 408 Envoy sends when a request’s headers never complete', async () => {
    showLogsOnFailure();
    // Half a request, never finished: Envoy's request_headers_timeout (10 s) answers it.
    const { port, hostname } = new URL(gatewayOrigin);
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => socket.write('GET /api/v1/customer/profile HTTP/1.1\r\n'));
      let received = '';
      socket.setTimeout(30_000, () => socket.destroy(new Error('no answer within 30 s')));
      socket.on('data', (chunk) => {
        received += chunk.toString('latin1');
      });
      socket.on('end', () => resolve(received));
      socket.on('close', () => resolve(received));
      socket.on('error', reject);
    });
    const [head = ''] = raw.split('\r\n\r\n');
    const [statusLine = '', ...lines] = head.split('\r\n');
    expect(statusLine).toMatch(/^HTTP\/1\.1 408/);
    const headers = Object.fromEntries(
      lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]),
    );
    for (const [name, value] of Object.entries(expectedSecurityHeaders)) expect(headers[name], name).toBe(value);
  });

  it('follow a route’s override', async () => {
    showLogsOnFailure();
    const answer = await send('GET', '/api/v1/docs/index.html');
    expect(answer.status).toBe(200);
    expect(answer.headers['content-security-policy']).toBe("default-src 'self'");
    expect(answer.headers['x-frame-options']).toBe('DENY');
    expect(answer.headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('CSRF through a real Envoy', () => {
  it('refuses a cross-site POST with 403 CSRF_ORIGIN_MISMATCH in the JSON format, before authentication', async () => {
    showLogsOnFailure();
    const answer = await send('POST', '/api/v1/appointments', { origin: 'https://evil.example' }, '{}');
    expect(answer.status).toBe(403);
    expect(answer.headers['content-type']).toContain('application/json');
    const body = JSON.parse(answer.text);
    expect(body).toMatchObject({
      success: false,
      error: { code: 'CSRF_ORIGIN_MISMATCH', message: 'このオリジンからの変更リクエストは許可されていません' },
      data: null,
    });
    expect(body.error.correlation_id).toBe(answer.headers['x-request-id']);
    expectSecurityHeaders(answer);

    const english = await send(
      'POST',
      '/api/v1/appointments',
      { origin: 'https://evil.example', 'accept-language': 'en-GB,en;q=0.8' },
      '{}',
    );
    expect(JSON.parse(english.text).error.message).toBe('State-changing requests from this origin are not allowed.');

    const referer = await send('POST', '/api/v1/appointments', { referer: 'https://evil.example/form' }, '{}');
    expect(referer.status).toBe(403);
    expect(errorCode(referer)).toBe('CSRF_ORIGIN_MISMATCH');
  });

  it('lets through a same-origin POST, one from a CORS origin, and one without Origin (a mobile app)', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('csrf-user', { group: 'member' });
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const origins: Array<Record<string, string>> = [
      { origin: gatewayOrigin },
      { origin: allowedOrigin },
      { origin: 'https://shop.example.com' },
      {},
    ];
    for (const headers of origins) {
      const answer = await send('POST', '/api/v1/appointments', { ...auth, ...headers }, '{"at":"10:00"}');
      expect(answer.status, JSON.stringify(headers)).toBe(200);
      expect(JSON.parse(answer.text).service).toBe('appointment');
    }
  });
});

describe('compression through a real Envoy', () => {
  // The echo repeats the query string, so this makes a JSON answer of several KiB.
  const bigPath = `/api/v1/docs/echo?pad=${'sekisho-'.repeat(400)}`;

  it('gzips and brotli-compresses a JSON answer as Accept-Encoding asks', async () => {
    showLogsOnFailure();
    const gzip = await send('GET', bigPath, { 'accept-encoding': 'gzip' });
    expect(gzip.status).toBe(200);
    expect(gzip.headers['content-encoding']).toBe('gzip');
    expect(String(gzip.headers.vary)).toContain('Accept-Encoding');
    expect(JSON.parse(gunzipSync(gzip.body).toString('utf8')).service).toBe('customer');

    const brotli = await send('GET', bigPath, { 'accept-encoding': 'br' });
    expect(brotli.headers['content-encoding']).toBe('br');
    const decoded = brotliDecompressSync(brotli.body);
    expect(JSON.parse(decoded.toString('utf8')).service).toBe('customer');
    expect(brotli.body.length).toBeLessThan(decoded.length / 4);

    // Equal preference: brotli (listed first in edge.compression.algorithms).
    const both = await send('GET', bigPath, { 'accept-encoding': 'gzip, br' });
    expect(both.headers['content-encoding']).toBe('br');
  });

  it('sends the body as it is without Accept-Encoding, and small answers uncompressed', async () => {
    showLogsOnFailure();
    const plain = await send('GET', bigPath);
    expect(plain.status).toBe(200);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(JSON.parse(plain.text).service).toBe('customer');

    const small = await send('GET', '/nowhere', { 'accept-encoding': 'gzip, br' });
    expect(small.status).toBe(404);
    expect(small.headers['content-encoding']).toBeUndefined();
  });
});
