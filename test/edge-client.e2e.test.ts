import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// Who the client is, and what reaches the upstream about it, through the whole stack (real
// Envoy, ext-authz, rate-limit service, Redis, demo upstreams). Distinct loopback addresses
// are distinct peers: 127.0.0.2 is the trusted proxy (a CDN), everything else a direct client.

const trustedProxy = '127.0.0.2';
const directClient = '127.0.0.3';
const deniedPeer = '127.0.0.4';

interface Echo {
  service: string;
  path: string;
  headers: Record<string, string>;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: { success?: boolean; error?: { code: string; message: string; correlation_id: string }; data?: null };
  echo: Echo;
}

let stack: Stack;
let dir: string;
let gatewayPort: number;

async function buildDefinition() {
  const [gateway, customer, extAuthz, rateLimit] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  gatewayPort = gateway;
  return {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-edge' },
      groupClaim: 'tier',
      groups: { basic_customer: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
    },
    services: {
      customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' },
    },
    limits: { unauthenticated: [{ per: 'ip', limit: 5, window: '1m' }] },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      { match: '/api/v1/public/*', to: 'customer', auth: 'none' },
    ],
    edge: {
      trustedProxies: [`${trustedProxy}/32`, '2001:db8:cd::/48'],
      ipRules: { deny: [`${deniedPeer}/32`, '198.51.100.0/24'], allow: ['203.0.113.50/32'] },
      geoBlock: { countries: ['CN', 'RU'] },
      // Below the demo upstream's own limit (Node's 16 KiB), so only the gateway refuses.
      headers: { maxSizeKb: 12 },
    },
  };
}

/**
 * A loopback address no other request used: each test's anonymous requests then count
 * against their own per-IP limit (127.0.1.x and up; 127.0.0.x are the named peers).
 */
let peers = 0;
function freshPeer(): string {
  peers++;
  return `127.0.${1 + Math.floor(peers / 250)}.${1 + (peers % 250)}`;
}

/** One HTTP/1.1 request from a chosen local address (a distinct peer for Envoy). */
function send(
  path: string,
  opts: { from?: string; method?: string; headers?: Record<string, string | string[]> | Array<[string, string]> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // Distinct names only, so an object keeps every header (and its count).
    const headers = Array.isArray(opts.headers) ? Object.fromEntries(opts.headers) : opts.headers;
    const req = request(
      {
        host: '127.0.0.1',
        port: gatewayPort,
        path,
        method: opts.method ?? 'GET',
        localAddress: opts.from ?? freshPeer(),
        headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = {};
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json: json as Answer['json'],
            echo: json as Echo,
          });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The raw request bytes over TCP, for what an HTTP client library would not send. */
function sendRaw(bytes: string, from = freshPeer()): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: gatewayPort, localAddress: from });
    const chunks: Buffer[] = [];
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.on('error', reject);
    socket.setTimeout(20_000, () => socket.destroy(new Error('raw request timed out')));
  });
}

function expectJsonError(answer: Answer, status: number, code: string) {
  expect(answer.status, answer.text).toBe(status);
  expect(answer.headers['content-type']).toContain('application/json');
  expect(answer.json).toMatchObject({ success: false, error: { code }, data: null });
  // Envoy's HTTP/1 codec refuses oversized headers before it assigns x-request-id.
  if (status !== 431) expect(answer.json.error?.correlation_id).toMatch(/^[0-9a-f-]{36}$/);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-edge-'));
  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(definitionFile, stringify(await buildDefinition()));
  stack = await startStack({ definitionFile, logLevel: 'info' });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack);

describe('header hygiene: what the upstream receives', () => {
  it('does not forward the verified Authorization header to the service', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-auth', { group: 'basic_customer' });
    const answer = await send('/api/v1/customer/profile', { headers: { authorization: `Bearer ${token}` } });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.echo.headers['x-sekisho-user-id']).toBe('user-auth');
    expect(answer.echo.headers.authorization).toBeUndefined();
  });

  it('removes client-sent proxy, rewrite and method-override headers', async () => {
    showLogsOnFailure();
    const spoofed = {
      'x-real-ip': '6.6.6.6',
      forwarded: 'for=6.6.6.6;proto=https;host=evil.example',
      'x-forwarded-host': 'evil.example',
      'x-forwarded-port': '6666',
      'x-original-url': '/admin',
      'x-rewrite-url': '/admin',
      'x-http-method-override': 'DELETE',
      'x-method-override': 'DELETE',
      'x-http-method': 'DELETE',
    };
    const answer = await send('/api/v1/public/echo', { headers: spoofed });
    expect(answer.status, answer.text).toBe(200);
    for (const name of Object.keys(spoofed)) expect(answer.echo.headers[name], name).toBeUndefined();
  });

  it('sets X-Forwarded-Proto itself, whatever a direct client sent', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', { headers: { 'x-forwarded-proto': 'https' } });
    expect(answer.echo.headers['x-forwarded-proto']).toBe('http');
  });

  it("sends the service's own Host upstream, never an absolute-form request line's", async () => {
    showLogsOnFailure();
    const raw = await sendRaw(
      'GET http://evil.example/api/v1/public/echo HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n',
    );
    expect(raw).toMatch(/^HTTP\/1\.1 200/);
    const echo = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Echo;
    expect(echo.headers.host).toBe('127.0.0.1');
  });
});

describe('header limits', () => {
  const manyHeaders = (count: number): Array<[string, string]> =>
    Array.from({ length: count }, (_, i) => [`x-extra-${i}`, 'v']);

  // The limit (80 by default) counts every entry Envoy holds: the client's headers (Node adds
  // Host; Connection is hop-by-hop), :method/:path/:scheme, Envoy's x-forwarded-*, x-request-id
  // and x-envoy-external-address, and the identity headers ext-authz adds (3 for this user).
  it('forwards an authenticated request with many (but allowed) headers', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-many', { group: 'basic_customer' });
    const answer = await send('/api/v1/customer/profile', {
      headers: [['authorization', `Bearer ${token}`], ...manyHeaders(60)],
    });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.echo.headers['x-extra-59']).toBe('v');
    expect(answer.echo.headers['x-sekisho-user-id']).toBe('user-many');
  });

  it('answers 431 in JSON (never the empty 500) when ext-authz would push the headers over the limit', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-too-many', { group: 'basic_customer' });
    const statuses: Record<string, number> = {};
    for (const count of [71, 75, 78, 79, 80, 92, 96, 100, 110]) {
      const distinct = await send('/api/v1/customer/profile', {
        headers: [['authorization', `Bearer ${token}`], ...manyHeaders(count - 2)],
      });
      expectJsonError(distinct, 431, 'REQUEST_HEADERS_TOO_LARGE');
      // One name on many lines is as many entries for Envoy.
      const repeated = await send('/api/v1/customer/profile', {
        headers: { authorization: `Bearer ${token}`, 'x-repeated': Array(count - 2).fill('v') },
      });
      statuses[count] = repeated.status;
    }
    expect(Object.values(statuses)).toEqual(Array(9).fill(431));
  });

  it('counts the same entries on a route without authentication', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/many', { headers: manyHeaders(60) });
    expect(answer.status, answer.text).toBe(200);
    const over = await send('/api/v1/public/many', { headers: manyHeaders(75) });
    expectJsonError(over, 431, 'REQUEST_HEADERS_TOO_LARGE');
  });

  it('answers 431 in JSON to headers over the size limit', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', { headers: { 'x-big': 'a'.repeat(40 * 1024) } });
    expectJsonError(answer, 431, 'REQUEST_HEADERS_TOO_LARGE');
  });

  it('answers 431 in JSON, in English when asked, never 500, when the added headers would pass the size limit', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('user-big', { group: 'basic_customer' });
    const answers: Answer[] = [];
    // From well under the 12 KiB limit to just over it: some requests are refused only
    // because of what the gateway adds.
    for (let size = 12 * 1024 - 2048; size <= 12 * 1024; size += 64) {
      answers.push(
        await send('/api/v1/customer/profile', {
          headers: { authorization: `Bearer ${token}`, 'accept-language': 'en', 'x-big': 'a'.repeat(size) },
        }),
      );
    }
    const refused = answers.filter((answer) => answer.status !== 200);
    for (const answer of refused) expectJsonError(answer, 431, 'REQUEST_HEADERS_TOO_LARGE');
    expect(answers.filter((answer) => answer.status === 200).length).toBeGreaterThan(0);
    const byExtAuthz = refused.filter((answer) => answer.json.error?.correlation_id);
    expect(byExtAuthz.length).toBeGreaterThan(0);
    expect(byExtAuthz[0]?.json.error?.message).toBe('The request headers are too many or too large.');
  });
});

describe('the client address: trusted proxies', () => {
  it('ignores X-Forwarded-For and CF-Connecting-IP from a direct client, and rebuilds X-Forwarded-For', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', {
      from: directClient,
      headers: { 'x-forwarded-for': '203.0.113.50', 'cf-connecting-ip': '203.0.113.50' },
    });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.echo.headers['x-forwarded-for']).toBe(directClient);
    expect(answer.echo.headers['cf-connecting-ip']).toBeUndefined();
  });

  it('believes the address a trusted proxy appended to X-Forwarded-For, and forwards only that one', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', {
      from: trustedProxy,
      headers: { 'x-forwarded-for': '10.9.9.9, 203.0.113.7' },
    });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.echo.headers['x-forwarded-for']).toBe('203.0.113.7');
  });

  it("gives ext-authz and Envoy's access log the derived client address", async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/customer/profile', {
      from: trustedProxy,
      headers: { 'x-forwarded-for': '203.0.113.70' },
    });
    expect(answer.status).toBe(401);
    const correlationId = answer.json.error?.correlation_id ?? 'none';
    // Each process's JSON lines carrying this request's correlation id, once both have logged.
    const records = () =>
      stack
        .logs()
        .split('\n')
        .filter((line) => line.includes(correlationId) && line.includes('{'))
        .map((line) => JSON.parse(line.slice(line.indexOf('{'))) as Record<string, unknown>);
    const fromExtAuthz = (r: Record<string, unknown>) => r.event_type === 'failed_auth';
    const fromEnvoy = (r: Record<string, unknown>) => r.status_code === 401 && r.route_name !== undefined;
    // Envoy flushes its access log every 10 s.
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !(records().some(fromExtAuthz) && records().some(fromEnvoy))) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(
      records()
        .filter(fromExtAuthz)
        .map((r) => r.ip_address),
    ).toEqual(['203.0.113.70']);
    expect(
      records()
        .filter(fromEnvoy)
        .map((r) => r.ip_address),
    ).toEqual(['203.0.113.70']);
  });

  it('counts the anonymous per-IP limit per derived client, not per proxy', async () => {
    showLogsOnFailure();
    const from = (ip: string) =>
      send('/api/v1/public/limits', { from: trustedProxy, headers: { 'x-forwarded-for': ip } });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await from('203.0.113.61')).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    // Another client behind the same proxy has its own count.
    expect((await from('203.0.113.62')).status).toBe(200);
  });

  it('lets VIP addresses (ipRules.allow) skip the anonymous per-IP limits', async () => {
    showLogsOnFailure();
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const answer = await send('/api/v1/public/vip', {
        from: trustedProxy,
        headers: { 'x-forwarded-for': '203.0.113.50' },
      });
      statuses.push(answer.status);
    }
    expect(statuses).toEqual(Array(8).fill(200));
  });
});

describe('IP rules and geo-blocking', () => {
  it('refuses a denied direct peer with 403 IP_BLOCKED in JSON', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', { from: deniedPeer });
    expectJsonError(answer, 403, 'IP_BLOCKED');
    expect(answer.json.error?.message).toBe('このIPアドレスからのアクセスは許可されていません');
  });

  it('refuses a denied client behind a trusted proxy, and cannot be dodged by a direct client', async () => {
    showLogsOnFailure();
    const proxied = await send('/api/v1/public/echo', {
      from: trustedProxy,
      headers: { 'x-forwarded-for': '198.51.100.20', 'accept-language': 'en-US' },
    });
    expectJsonError(proxied, 403, 'IP_BLOCKED');
    expect(proxied.json.error?.message).toMatch(/IP address/);
    // A denied peer claiming another address is still itself.
    const spoofing = await send('/api/v1/public/echo', {
      from: deniedPeer,
      headers: { 'x-forwarded-for': '203.0.113.9' },
    });
    expectJsonError(spoofing, 403, 'IP_BLOCKED');
  });

  it('refuses a blocked country from a trusted proxy with 403 GEO_BLOCKED in JSON', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', {
      from: trustedProxy,
      headers: { 'x-forwarded-for': '203.0.113.8', 'cf-ipcountry': 'CN' },
    });
    expectJsonError(answer, 403, 'GEO_BLOCKED');
    const allowed = await send('/api/v1/public/echo', {
      from: trustedProxy,
      headers: { 'x-forwarded-for': '203.0.113.8', 'cf-ipcountry': 'JP' },
    });
    expect(allowed.status).toBe(200);
    expect(allowed.echo.headers['cf-ipcountry']).toBe('JP');
  });

  it('neither trusts nor forwards a country header a direct client sent', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', { from: directClient, headers: { 'cf-ipcountry': 'RU' } });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.echo.headers['cf-ipcountry']).toBeUndefined();
  });

  it('never geo-blocks a VIP address', async () => {
    showLogsOnFailure();
    const answer = await send('/api/v1/public/echo', {
      from: trustedProxy,
      headers: { 'x-forwarded-for': '203.0.113.50', 'cf-ipcountry': 'RU' },
    });
    expect(answer.status, answer.text).toBe(200);
  });
});
