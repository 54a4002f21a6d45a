// Routes and services through a real Envoy: the generated config is served over ADS (the
// control plane's own server, in-process) to Envoy 1.40, which calls two real ext-authz
// replicas over gRPC and forwards to real HTTP upstreams that echo what they received.
// Template paths and rewrites, header and query matches, weighted splits, direct responses
// and redirects, retries, outlier ejection, upstream TLS and HTTP/2, and ext-authz replica
// failover.
import { readFileSync } from 'node:fs';
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { compileDefinition } from '@sekisho/control-plane/definition/load';
import { translateAuthzPolicy } from '@sekisho/control-plane/translate/policy';
import { type AdsWithEnvoy, serveToRealEnvoy } from '@sekisho/control-plane/xds/test-helpers';
import { type DemoUpstream, type EchoResponse, startDemoUpstream } from '@sekisho/demo-upstream/server';
import { createFirebaseKeyServer, type FirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { freePort } from '@sekisho/devstack/processes';
import { type ExtAuthzApp, startExtAuthzApp } from '@sekisho/ext-authz/app';
import { loadExtAuthzConfig } from '@sekisho/ext-authz/config';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const projectId = 'demo-edge-routes';
const tlsDir = resolve(import.meta.dirname, '../control-plane/src/translate/testdata/tls');
const tlsFile = (name: string) => resolve(tlsDir, name);

/** What the TLS upstream saw of the connection Envoy made. */
interface TlsEcho {
  httpVersion: string;
  path: string;
  servername: string | null;
  clientCertificate: string | null;
  clientAuthorized: boolean;
}

/**
 * An HTTPS upstream speaking HTTP/2 and HTTP/1.1 with the test CA's customer.internal
 * certificate; it asks for a client certificate and says what it got.
 */
async function startTlsUpstream(): Promise<Http2SecureServer> {
  const server = createSecureServer(
    {
      key: readFileSync(tlsFile('server.key')),
      cert: readFileSync(tlsFile('server.pem')),
      ca: readFileSync(tlsFile('ca.pem')),
      requestCert: true,
      rejectUnauthorized: false,
      allowHTTP1: true,
    },
    (req: Http2ServerRequest, res) => {
      const socket = (req.httpVersion === '2.0' ? req.stream.session?.socket : req.socket) as TLSSocket;
      const peer = socket.getPeerCertificate();
      const echo: TlsEcho = {
        httpVersion: req.httpVersion,
        path: req.url,
        servername: typeof socket.servername === 'string' ? socket.servername : null,
        clientCertificate: peer && Object.keys(peer).length > 0 ? String(peer.subject?.CN) : null,
        clientAuthorized: socket.authorized,
      };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(echo));
    },
  );
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return server;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let keys: FirebaseKeyServer;
const replicas: ExtAuthzApp[] = [];
const upstreams: Record<string, DemoUpstream> = {};
let served: AdsWithEnvoy | undefined;
let gateway: string;
let tlsUpstream: Http2SecureServer | undefined;

async function startReplica(): Promise<ExtAuthzApp> {
  const app = await startExtAuthzApp(
    loadExtAuthzConfig({
      EXT_AUTHZ_GRPC_PORT: '0',
      EXT_AUTHZ_ADMIN_PORT: '0',
      EXT_AUTHZ_FIREBASE_CERTS_URL: keys.url,
      EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true',
      LOG_LEVEL: 'silent',
    }),
    { subscribe: false },
  );
  replicas.push(app);
  return app;
}

/** Checks a replica answered, from its own metrics. */
async function checksServed(app: ExtAuthzApp): Promise<number> {
  const metric = await app.registry.getSingleMetric('sekisho_ext_authz_checks_total')?.get();
  return (metric?.values ?? []).reduce((sum, value) => sum + value.value, 0);
}

beforeAll(async () => {
  keys = await createFirebaseKeyServer();
  const [authzA, authzB] = [await startReplica(), await startReplica()];
  for (const name of ['appointment', 'customer', 'beta', 'flaky-bad', 'flaky-good', 'fragile-bad', 'fragile-good']) {
    upstreams[name] = await startDemoUpstream({ name: name.replace(/-(bad|good)$/, ''), port: 0 });
  }
  const at = (name: string) => `127.0.0.1:${upstreams[name]?.port}`;
  tlsUpstream = await startTlsUpstream();
  const tlsAt = `127.0.0.1:${(tlsUpstream.address() as AddressInfo).port}`;
  const caFile = tlsFile('ca.pem');
  const port = await freePort();
  const compiled = compileDefinition({
    listeners: { http: { address: '127.0.0.1', port } },
    identity: {
      firebase: { projectId },
      groupClaim: 'tier',
      defaultGroup: 'member',
      groups: { member: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: {
        addresses: [`127.0.0.1:${authzA.grpcPort}`, `127.0.0.1:${authzB.grpcPort}`],
        // Generous: the replicas share this process's event loop with the test on a loaded machine.
        timeout: '5s',
        healthCheck: { interval: '1s', timeout: '3s', unhealthyThreshold: 2, healthyThreshold: 1 },
      },
      // No limits are defined, so Envoy never calls it.
      rateLimit: { address: `127.0.0.1:${await freePort()}`, healthCheck: false },
    },
    services: {
      appointment: { endpoints: [at('appointment')], connectTimeout: '5s' },
      customer: { endpoints: [at('customer')], connectTimeout: '5s' },
      beta: { endpoints: [at('beta')], connectTimeout: '5s' },
      flaky: { endpoints: [at('flaky-bad'), at('flaky-good')], connectTimeout: '5s' },
      fragile: {
        endpoints: [at('fragile-bad'), at('fragile-good')],
        // The reference's circuit breaker (§4.2): 3 failures, 30 s before trying again.
        outlierDetection: { consecutive5xx: 3, baseEjectionTime: '30s', maxEjectionPercent: 50 },
      },
      secure: {
        endpoints: [tlsAt],
        protocol: 'http2',
        tls: { sni: 'customer.internal', caFile, certFile: tlsFile('client.pem'), keyFile: tlsFile('client.key') },
      },
      'secure-h1': { endpoints: [tlsAt], tls: { sni: 'customer.internal', caFile } },
      // The same server under a name its certificate does not carry.
      'wrong-name': { endpoints: [tlsAt], tls: { sni: 'other.internal', caFile } },
    },
    routes: [
      {
        match: { methods: ['GET'], template: '/api/v1/appointments/{id}' },
        to: 'appointment',
        rewrite: '/appointments/{id}',
        auth: 'none',
      },
      { match: { template: '/api/v1/files/{path=**}' }, to: 'appointment', rewrite: '/files/{path}', auth: 'none' },
      {
        match: {
          path: '/api/v1/profile',
          headers: [{ name: 'x-client', exact: 'ios' }],
          query: [{ name: 'beta', exact: '1' }],
        },
        to: 'beta',
        auth: 'none',
      },
      { match: '/api/v1/profile', to: 'customer', auth: 'none' },
      {
        match: 'GET /api/v1/canary',
        split: [
          { to: 'customer', weight: 75 },
          { to: 'beta', weight: 25 },
        ],
        auth: 'none',
      },
      { match: 'GET /api/v1/status', directResponse: { status: 200, body: '{"status":"ok"}' }, auth: 'none' },
      { match: 'GET /api/v1/private-status', directResponse: { status: 200, body: '{"private":true}' } },
      {
        match: 'GET /api/v1/maintenance',
        directResponse: { status: 503, body: '{"maintenance":true}' },
        auth: 'none',
      },
      { match: '/api/v0/*', redirect: { prefixRewrite: '/api/v1/', status: 308 }, auth: 'none' },
      { match: 'GET /api/v1/flaky', to: 'flaky', auth: 'none', retries: { on: ['5xx'], count: 2 } },
      { match: 'GET /api/v1/flaky-once', to: 'flaky', rewrite: '/api/v1/flaky', auth: 'none' },
      { match: 'GET /api/v1/fragile', to: 'fragile', auth: 'none' },
      { match: 'GET /api/v1/me', to: 'customer', require: ['read:own_profile'] },
      { match: 'GET /api/v1/secure', to: 'secure', auth: 'none' },
      { match: 'GET /api/v1/secure-h1', to: 'secure-h1', auth: 'none' },
      { match: 'GET /api/v1/wrong-name', to: 'wrong-name', auth: 'none' },
    ],
  });
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors, null, 2));
  for (const app of replicas) app.applyPolicy(translateAuthzPolicy(compiled.ir), 'v1');
  await until('both ext-authz replicas ready (keys loaded)', async () => replicas.every((app) => app.isReady()));

  served = await serveToRealEnvoy('edge-routes-test', compiled.resources);
  await served.envoy.waitForListener('ingress_http', 60_000);
  gateway = `http://127.0.0.1:${port}`;
  const envoy = served.envoy;
  // Both replicas pass Envoy's gRPC health check (grpc.health.v1, SERVING once they have policy).
  await until('both ext-authz replicas healthy in Envoy', async () => {
    const clusters = await envoy.admin('/clusters');
    const flags = clusters.split('\n').filter((line) => /^sekisho_ext_authz::.*::health_flags::/.test(line));
    return flags.length === 2 && flags.every((line) => line.endsWith('::healthy'));
  });
}, 180_000);

afterAll(async () => {
  await served?.close();
  for (const app of replicas) await app.close();
  for (const upstream of Object.values(upstreams)) await upstream.close(100);
  tlsUpstream?.close();
  await keys?.close();
});

// Envoy's access log and recent output under a failing test.
afterEach(async ({ task }) => {
  if (task.result?.state !== 'fail' || served === undefined) return;
  console.log(served.envoy.logs().split('\n').slice(-60).join('\n'));
  console.log(await served.envoy.stats('ext_authz|upstream_rq_5|upstream_cx_connect_fail|health_check\\.failure'));
});

async function get(path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${gateway}${path}`, { headers, redirect: 'manual' });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}

async function echo(path: string, headers: Record<string, string> = {}): Promise<EchoResponse> {
  const response = await get(path, headers);
  expect(response.status, response.text).toBe(200);
  return JSON.parse(response.text) as EchoResponse;
}

describe('template paths and rewrites', () => {
  it('reaches the upstream with the template rewrite applied', async () => {
    const answer = await echo('/api/v1/appointments/42?view=full');
    expect(answer).toMatchObject({ service: 'appointment', path: '/appointments/42', query: { view: 'full' } });
  });

  it('captures the rest of the path with {name=**}', async () => {
    expect((await echo('/api/v1/files/2026/12/receipt.pdf')).path).toBe('/files/2026/12/receipt.pdf');
  });

  it('matches one segment only, and only the methods named (another method is 405 with Allow)', async () => {
    expect((await get('/api/v1/appointments/42/extra')).status).toBe(404);
    const post = await fetch(`${gateway}/api/v1/appointments/42`, { method: 'POST' });
    await post.text();
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET');
  });
});

describe('header and query matches', () => {
  it.each([
    ['both the header and the query parameter', '/api/v1/profile?beta=1', { 'x-client': 'ios' }, 'beta'],
    ['only the header', '/api/v1/profile', { 'x-client': 'ios' }, 'customer'],
    ['only the query parameter', '/api/v1/profile?beta=1', {}, 'customer'],
    ['another header value', '/api/v1/profile?beta=1', { 'x-client': 'android' }, 'customer'],
  ])('with %s goes to %s', async (_case, path, headers, service) => {
    expect((await echo(path, headers)).service).toBe(service);
  });
});

describe('weighted split (canary)', () => {
  it('sends roughly the configured share to each service', async () => {
    const counts: Record<string, number> = { customer: 0, beta: 0 };
    for (let i = 0; i < 200; i++) {
      const { service } = await echo('/api/v1/canary');
      counts[service] = (counts[service] ?? 0) + 1;
    }
    // 75/25 over 200 requests: expected 150/50. Bounds loose enough never to flake.
    expect(counts.beta).toBeGreaterThanOrEqual(15);
    expect(counts.beta).toBeLessThanOrEqual(95);
    expect((counts.customer ?? 0) + (counts.beta ?? 0)).toBe(200);
  });
});

describe('direct responses and redirects', () => {
  it('answers a direct response with its body and content type', async () => {
    const response = await get('/api/v1/status');
    expect(response.status).toBe(200);
    expect(JSON.parse(response.text)).toEqual({ status: 'ok' });
    expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
  });

  it('serves a declared direct response as written, even with a status Envoy maps to the JSON error body', async () => {
    const response = await get('/api/v1/maintenance');
    expect(response.status).toBe(503);
    expect(JSON.parse(response.text)).toEqual({ maintenance: true });
  });

  it('still authenticates a direct response route that does not say auth: none', async () => {
    const anonymous = await get('/api/v1/private-status');
    expect(anonymous.status).toBe(401);
    expect(JSON.parse(anonymous.text)).toMatchObject({ success: false, error: { code: 'MISSING_TOKEN' } });
    const token = await mintIdToken(keys.signingKey, { projectId, uid: 'user-1' });
    const signedIn = await get('/api/v1/private-status', { authorization: `Bearer ${token}` });
    expect(signedIn.status).toBe(200);
    expect(JSON.parse(signedIn.text)).toEqual({ private: true });
  });

  it('redirects a moved prefix with 308, keeping the rest of the path and the query', async () => {
    const response = await get('/api/v0/appointments/7?x=1');
    expect(response.status).toBe(308);
    expect(response.headers.get('location')).toBe(`${gateway}/api/v1/appointments/7?x=1`);
  });
});

describe('retries', () => {
  it('retries a 5xx from one endpoint on the other, so every request succeeds', async () => {
    const bad = upstreams['flaky-bad'];
    bad?.setFault({ status: 503 });
    const before = bad?.requests() ?? 0;
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await get('/api/v1/flaky')).status);
    expect(
      statuses.every((status) => status === 200),
      statuses.join(','),
    ).toBe(true);
    // The failing endpoint was really tried, and Envoy retried.
    expect((bad?.requests() ?? 0) - before).toBeGreaterThan(0);
    const stats = await served?.envoy.stats('^cluster\\.svc_flaky\\.upstream_rq_retry$');
    expect(stats?.['cluster.svc_flaky.upstream_rq_retry']).toBeGreaterThan(0);
  });

  it('does not retry a 5xx on a route left at the safe default (connection failures only)', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await get('/api/v1/flaky-once')).status);
    expect(statuses).toContain(503);
    upstreams['flaky-bad']?.setFault(null);
  });
});

describe('outlier detection (the reference circuit breaker)', () => {
  it('ejects an endpoint after 3 consecutive 5xx, and every later request goes to the healthy one', async () => {
    const bad = upstreams['fragile-bad'];
    bad?.setFault({ status: 500 });
    const envoy = served?.envoy;
    if (envoy === undefined) throw new Error('no Envoy');
    const ejected = async () =>
      ((await envoy.stats('^cluster\\.svc_fragile\\.outlier_detection\\.ejections_enforced_consecutive_5xx$'))[
        'cluster.svc_fragile.outlier_detection.ejections_enforced_consecutive_5xx'
      ] ?? 0) > 0;
    // Round robin alternates, so the bad endpoint sees its third 5xx by about the sixth request.
    const early: number[] = [];
    for (let i = 0; i < 12 && !(await ejected()); i++) early.push((await get('/api/v1/fragile')).status);
    await until('the bad endpoint ejected', ejected, 10_000);
    expect(early.filter((status) => status === 500).length).toBeGreaterThanOrEqual(3);

    const badBefore = bad?.requests() ?? 0;
    const later: number[] = [];
    for (let i = 0; i < 20; i++) later.push((await get('/api/v1/fragile')).status);
    expect(
      later.every((status) => status === 200),
      later.join(','),
    ).toBe(true);
    expect(bad?.requests()).toBe(badBefore);
    bad?.setFault(null);
  });
});

describe('upstream TLS and HTTP/2', () => {
  it('speaks HTTP/2 over TLS with SNI and the client certificate', async () => {
    const response = await get('/api/v1/secure');
    expect(response.status, response.text).toBe(200);
    expect(JSON.parse(response.text)).toEqual({
      httpVersion: '2.0',
      path: '/api/v1/secure',
      servername: 'customer.internal',
      clientCertificate: 'sekisho-gateway',
      clientAuthorized: true,
    } satisfies TlsEcho);
  });

  it('speaks HTTP/1.1 over TLS without a client certificate when none is configured', async () => {
    const response = await get('/api/v1/secure-h1');
    expect(response.status, response.text).toBe(200);
    expect(JSON.parse(response.text)).toMatchObject({ httpVersion: '1.1', clientCertificate: null });
  });

  it('refuses a certificate that does not carry the configured name', async () => {
    expect((await get('/api/v1/wrong-name')).status).toBe(503);
    const stats = await served?.envoy.stats('^cluster\\.svc_wrong-name\\.ssl\\.fail_verify_san$');
    expect(stats?.['cluster.svc_wrong-name.ssl.fail_verify_san']).toBeGreaterThan(0);
  });
});

describe('ext-authz replicas', () => {
  it('keeps answering every request when one of two replicas stops', async () => {
    const [first, second] = replicas;
    if (first === undefined || second === undefined) throw new Error('two replicas expected');
    const token = await mintIdToken(keys.signingKey, { projectId, uid: 'user-2' });
    const me = () => get('/api/v1/me', { authorization: `Bearer ${token}` });

    const [firstBefore, secondBefore] = [await checksServed(first), await checksServed(second)];
    for (let i = 0; i < 10; i++) {
      const response = await me();
      expect(response.status, response.text).toBe(200);
    }
    // Both replicas took part before one goes away.
    expect(await checksServed(first)).toBeGreaterThan(firstBefore);
    expect(await checksServed(second)).toBeGreaterThan(secondBefore);

    await first.close();
    // Before Envoy's health check notices, a call to the stopped replica is retried on the other.
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await me()).status);
    expect(
      statuses.every((status) => status === 200),
      statuses.join(','),
    ).toBe(true);
    const envoy = served?.envoy;
    if (envoy === undefined) throw new Error('no Envoy');
    const retried = await envoy.stats('^cluster\\.sekisho_ext_authz\\.upstream_rq_retry$');
    expect(retried['cluster.sekisho_ext_authz.upstream_rq_retry']).toBeGreaterThan(0);

    // Then the gRPC health check takes it out of rotation, and requests keep succeeding.
    await until('the stopped replica marked unhealthy', async () =>
      (await envoy.admin('/clusters'))
        .split('\n')
        .some(
          (line) =>
            line.startsWith(`sekisho_ext_authz::127.0.0.1:${first.grpcPort}::health_flags::`) &&
            line.includes('failed_active_hc'),
        ),
    );
    const after: number[] = [];
    for (let i = 0; i < 10; i++) after.push((await me()).status);
    expect(
      after.every((status) => status === 200),
      after.join(','),
    ).toBe(true);
  });
});
