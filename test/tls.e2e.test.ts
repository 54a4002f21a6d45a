import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConnectionOptions, type PeerCertificate, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { devCertificateAuthorityFile } from '@sekisho/devstack/paths';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueServerCertificate,
  type ServerCertificate,
} from '@sekisho/devstack/tls-certs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure, writeFileAtomically } from './support';

// HTTPS at the ingress, end to end: a real Envoy gets its certificates from the control plane
// over SDS (ADS), terminates TLS with the definition's parameters, picks a certificate by SNI,
// redirects plain HTTP, and takes a rotated certificate file without dropping a request.

let stack: Stack;
let dir: string;
let ca: CertificateAuthority;
/** The development CA of `npm start` (control-plane/examples/dev-tls), which signed the first default certificate. */
let devCa: string;
/** What the clients trust: the development CA and the test's own CA (which signs the rotated certificate). */
let trusted: string[];
let httpsPort: number;
let httpPort: number;

const apiName = 'api.sekisho.test';

async function writeCertificate(name: string, certificate: ServerCertificate) {
  // Written to a temporary name and renamed, as an editor or `kubectl cp` would: each file
  // changes at once; the two files still change one after the other.
  for (const [file, text] of [
    [`${name}.crt`, certificate.certificatePem],
    [`${name}.key`, certificate.privateKeyPem],
  ] as const) {
    await writeFileAtomically(join(dir, 'tls', file), text);
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-tls-e2e-'));
  await mkdir(join(dir, 'tls'));
  ca = await createCertificateAuthority('Sekisho e2e CA');
  devCa = await readFile(devCertificateAuthorityFile, 'utf8');
  trusted = [devCa, ca.certificatePem];
  // The default certificate starts as npm start's development certificate.
  const devTls = join(devCertificateAuthorityFile, '..');
  await copyFile(join(devTls, 'localhost.crt'), join(dir, 'tls/localhost.crt'));
  await copyFile(join(devTls, 'localhost.key'), join(dir, 'tls/localhost.key'));
  await writeCertificate('api', await issueServerCertificate(ca, { commonName: apiName, dnsNames: [apiName] }));
  const [customer, extAuthz, rateLimit] = await Promise.all([freePort(), freePort(), freePort()]);
  [httpPort, httpsPort] = await Promise.all([freePort(), freePort()]);
  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(
    definitionFile,
    stringify({
      listeners: {
        http: { address: '127.0.0.1', port: httpPort, redirectExempt: ['/health'] },
        https: {
          address: '127.0.0.1',
          port: httpsPort,
          certificates: [
            { certFile: 'tls/api.crt', keyFile: 'tls/api.key', serverNames: [apiName] },
            { certFile: 'tls/localhost.crt', keyFile: 'tls/localhost.key' },
          ],
        },
      },
      identity: {
        firebase: { projectId: 'demo-sekisho-tls' },
        groupClaim: 'tier',
        groups: { basic_customer: ['read:own_profile'] },
      },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`] } },
      routes: [
        { match: 'GET /health', to: 'customer', auth: 'none' },
        { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      ],
    }),
  );
  stack = await startStack({ definitionFile, logLevel: 'info' });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack, 60);

interface HttpsAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  socket: TLSSocket;
  certificate: PeerCertificate;
}

/** A request as curl --cacert makes it: the chain and the host name verified against the test CA. */
function httpsGet(
  path: string,
  opts: { agent?: Agent; headers?: Record<string, string>; servername?: string; ca?: string | string[] } = {},
): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: httpsPort,
        path,
        headers: opts.headers,
        ca: opts.ca ?? trusted,
        ...(opts.servername ? { servername: opts.servername } : {}),
        agent: opts.agent ?? false,
        timeout: 15_000,
      },
      (res) => {
        // Taken now: a kept-alive socket goes back to its agent (res.socket null) at the end.
        const socket = res.socket as TLSSocket;
        const certificate = socket.getPeerCertificate();
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            socket,
            certificate,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** A bare TLS handshake: resolves with the socket once it is secure, rejects with the handshake error. */
function handshake(opts: ConnectionOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: httpsPort, ca: trusted, ...opts });
    socket.setTimeout(15_000, () => socket.destroy(new Error('handshake timed out')));
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('HTTPS at the ingress (real Envoy, certificates over SDS)', () => {
  it('serves HTTPS with the development certificate, verified against the development CA, through ext-authz', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('alice', { group: 'basic_customer' });
    const answer = await httpsGet('/api/v1/customer/profile', {
      headers: { authorization: `Bearer ${token}` },
      ca: devCa,
    });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ service: 'customer', path: '/profile' });
    expect(answer.socket.authorized).toBe(true);
    expect(answer.certificate.subject.CN).toBe('localhost');
    expect(stack.gatewayUrl).toBe(`https://127.0.0.1:${httpsPort}`);

    const anonymous = await httpsGet('/api/v1/customer/profile');
    expect(anonymous.status).toBe(401);
  });

  it('sends HSTS on HTTPS answers (an ext-authz 401 too) and never on plain HTTP', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('hsts-user', { group: 'basic_customer' });
    const ok = await httpsGet('/api/v1/customer/profile', { headers: { authorization: `Bearer ${token}` }, ca: devCa });
    expect(ok.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
    const denied = await httpsGet('/api/v1/customer/profile', { ca: devCa });
    expect(denied.status).toBe(401);
    expect(denied.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
    const health = await fetch(`${stack.httpUrl}/health`, { redirect: 'manual' });
    expect(health.status).toBe(200);
    expect(health.headers.get('strict-transport-security')).toBeNull();
    expect(health.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it('redirects plain HTTP with 308 and the https Location, before any authentication', async () => {
    showLogsOnFailure();
    for (const method of ['GET', 'POST']) {
      const response = await fetch(`${stack.httpUrl}/api/v1/customer/profile?page=2`, { method, redirect: 'manual' });
      expect(response.status).toBe(308);
      expect(response.headers.get('location')).toBe(`https://127.0.0.1:${httpsPort}/api/v1/customer/profile?page=2`);
    }
    const followed = await httpsGet('/api/v1/customer/profile?page=2');
    expect(followed.status).toBe(401); // reached the route over HTTPS: ext-authz asks for a token
  });

  it('routes an exempt path on plain HTTP, and only that path', async () => {
    showLogsOnFailure();
    const health = await fetch(`${stack.httpUrl}/health`, { redirect: 'manual' });
    expect(health.status).toBe(200);
    const withQuery = await fetch(`${stack.httpUrl}/health?probe=lb`, { redirect: 'manual' });
    expect(withQuery.status).toBe(200);
    for (const path of ['/healthz', '/health/x', '/api/../health/../api/v1/customer/profile']) {
      const other = await fetch(`${stack.httpUrl}${path}`, { redirect: 'manual' });
      expect(other.status, path).toBe(308);
    }
  });

  it('negotiates HTTP/2 by ALPN and serves requests over it', async () => {
    showLogsOnFailure();
    const socket = await handshake({ ALPNProtocols: ['h2', 'http/1.1'] });
    expect(socket.alpnProtocol).toBe('h2');
    expect(socket.getProtocol()).toBe('TLSv1.3');
    socket.destroy();

    const http11 = await handshake({ ALPNProtocols: ['http/1.1'] });
    expect(http11.alpnProtocol).toBe('http/1.1');
    http11.destroy();

    const session = http2Connect(`https://127.0.0.1:${httpsPort}`, { ca: trusted });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':path': '/health' });
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', reject);
        stream.resume();
        stream.end();
      });
      expect(status).toBe(200);
    } finally {
      session.close();
    }
  });

  it('refuses TLS 1.1 and TLS 1.2 without forward secrecy, accepts TLS 1.2 with ECDHE-GCM', async () => {
    showLogsOnFailure();
    // SECLEVEL=0: the client would offer TLS 1.1, so the refusal is the server's.
    await expect(
      handshake({ minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }),
    ).rejects.toThrow(/protocol version|unsupported protocol|alert/i);
    await expect(handshake({ maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256:AES256-SHA' })).rejects.toThrow(
      /handshake failure|alert|no ciphers/i,
    );
    const modern = await handshake({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' });
    expect(modern.getProtocol()).toBe('TLSv1.2');
    expect(modern.getCipher().name).toBe('ECDHE-RSA-AES128-GCM-SHA256');
    modern.destroy();
  });

  it('chooses the certificate by SNI, and the default one for other names and no SNI', async () => {
    showLogsOnFailure();
    const api = await handshake({ servername: apiName });
    expect(api.getPeerCertificate().subject.CN).toBe(apiName);
    expect(api.authorized).toBe(true);
    api.destroy();

    const other = await handshake({ servername: 'other.sekisho.test', checkServerIdentity: () => undefined });
    expect(other.getPeerCertificate().subject.CN).toBe('localhost');
    other.destroy();

    const viaApi = await httpsGet('/health', { servername: apiName, headers: { host: apiName } });
    expect(viaApi.status).toBe(200);
    expect(viaApi.certificate.subject.CN).toBe(apiName);
  });

  it('serves a rotated certificate with zero failed requests, on new and kept-alive connections', async () => {
    showLogsOnFailure();
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    const keptSockets = new Set<TLSSocket>();
    const failures: string[] = [];
    const next = await issueServerCertificate(ca, {
      commonName: 'localhost',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
    });
    const newSerial = next.serialHex.toUpperCase();
    const oldSerial = (await httpsGet('/health')).certificate.serialNumber.toUpperCase();
    expect(oldSerial).not.toBe(newSerial);

    let rotation: Promise<void> | undefined;
    let requests = 0;
    let servedNewAt: number | undefined;
    const deadline = Date.now() + 60_000;
    // Bounded: until 40 requests after the new certificate first showed, at most 3000 or 60 s.
    while (requests < 3_000 && Date.now() < deadline && (servedNewAt === undefined || requests < servedNewAt + 40)) {
      requests += 1;
      if (requests === 20) rotation = writeCertificate('localhost', next);
      const fresh = requests % 2 === 0;
      try {
        const answer = await httpsGet('/health', fresh ? {} : { agent: keepAlive });
        if (answer.status !== 200) failures.push(`request ${requests}: status ${answer.status}`);
        if (fresh && answer.certificate.serialNumber.toUpperCase() === newSerial) servedNewAt ??= requests;
        if (!fresh) keptSockets.add(answer.socket);
      } catch (error) {
        failures.push(`request ${requests} (${fresh ? 'new' : 'kept-alive'} connection): ${String(error)}`);
      }
    }
    await rotation;
    keepAlive.destroy();

    expect(failures).toEqual([]);
    expect(servedNewAt, `the new certificate was not served within ${requests} requests`).toBeDefined();
    // The kept-alive connection was never dropped: every one of its requests used one socket.
    expect(keptSockets.size).toBe(1);
    const after = await httpsGet('/health');
    expect(after.certificate.serialNumber.toUpperCase()).toBe(newSerial);
    expect(after.socket.authorized).toBe(true);
  });
});
