import { X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, importX509, jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createFirebaseKeyServer,
  type FirebaseKeyServer,
  generateSigningKey,
  loadOrCreateDevKey,
  mintIdToken,
} from './firebase-keys';

const projectId = 'demo-sekisho';

async function fetchCerts(url: string): Promise<{ certs: Record<string, string>; cacheControl: string | null }> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return { certs: (await res.json()) as Record<string, string>, cacheControl: res.headers.get('cache-control') };
}

describe('generateSigningKey', () => {
  it('makes a self-signed certificate that node:crypto parses and verifies with its own key', async () => {
    const key = await generateSigningKey();
    const cert = new X509Certificate(key.certificatePem);
    expect(cert.subject).toBe('CN=securetoken.system.gserviceaccount.com');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(new Date(cert.validFrom).getTime()).toBeLessThan(Date.now());
    expect(new Date(cert.validTo).getTime()).toBeGreaterThan(Date.now() + 13 * 86_400_000);
    expect(key.kid).toMatch(/^[0-9a-f]{40}$/);
  });
});

describe('createFirebaseKeyServer', () => {
  let server: FirebaseKeyServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it("serves certificates in the shape of Google's x509 endpoint, with max-age", async () => {
    server = await createFirebaseKeyServer({ maxAgeSeconds: 120 });
    const { certs, cacheControl } = await fetchCerts(server.url);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/robot\/v1\/metadata\/x509\/securetoken@system/);
    expect(Object.keys(certs)).toEqual([server.signingKey.kid]);
    expect(certs[server.signingKey.kid]).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/);
    expect(cacheControl).toMatch(/^public, max-age=120\b/);
    expect(server.requests()).toBe(1);
  });

  it('mints a token that jose verifies against the certificate fetched from the server', async () => {
    server = await createFirebaseKeyServer();
    const token = await mintIdToken(server.signingKey, {
      projectId,
      uid: 'user-1',
      email: 'a@example.com',
      emailVerified: true,
      claims: { tier: 'premium_customer' },
    });
    const header = decodeProtectedHeader(token);
    const { certs } = await fetchCerts(server.url);
    const pem = certs[header.kid ?? ''];
    if (!pem) throw new Error(`no certificate for kid ${header.kid}`);
    const { payload, protectedHeader } = await jwtVerify(token, await importX509(pem, 'RS256'), {
      issuer: `https://securetoken.google.com/${projectId}`,
      audience: projectId,
      algorithms: ['RS256'],
    });
    expect(protectedHeader).toEqual({ alg: 'RS256', kid: server.signingKey.kid, typ: 'JWT' });
    expect(payload).toMatchObject({
      sub: 'user-1',
      user_id: 'user-1',
      email: 'a@example.com',
      email_verified: true,
      tier: 'premium_customer',
      firebase: { sign_in_provider: 'password', identities: { email: ['a@example.com'] } },
    });
    expect(payload.exp).toBe((payload.iat ?? 0) + 3600);
    expect(payload.auth_time).toBe(payload.iat);
  });

  it('serves the same keys as a JWK set', async () => {
    server = await createFirebaseKeyServer();
    const token = await mintIdToken(server.signingKey, { projectId, uid: 'u' });
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(server.jwksUrl)), { audience: projectId });
    expect(payload.sub).toBe('u');
  });

  it('publishes old and new keys after rotate, and drops a retired one', async () => {
    server = await createFirebaseKeyServer();
    const first = server.signingKey;
    const second = await server.rotate();
    expect(server.signingKey).toBe(second);
    expect(Object.keys((await fetchCerts(server.url)).certs)).toEqual([first.kid, second.kid]);
    server.retire(first.kid);
    expect(Object.keys((await fetchCerts(server.url)).certs)).toEqual([second.kid]);
    expect(server.requests()).toBe(2);
  });

  it('answers with the outage status while one is set', async () => {
    server = await createFirebaseKeyServer();
    server.setOutage(503);
    expect((await fetch(server.url)).status).toBe(503);
    server.setOutage(null);
    expect((await fetch(server.url)).status).toBe(200);
  });
});

describe('mintIdToken overrides for invalid tokens', () => {
  it.each([
    ['an expired token', { issuedAt: new Date(Date.now() - 7200_000) }, /"exp" claim timestamp check failed/],
    ['a foreign audience', { audience: 'other-project' }, /unexpected "aud" claim value/],
    ['a foreign issuer', { issuer: 'https://securetoken.google.com/other' }, /unexpected "iss" claim value/],
  ])('%s fails verification', async (_name, override, error) => {
    const key = await generateSigningKey();
    const token = await mintIdToken(key, { projectId, uid: 'u', ...override });
    await expect(
      jwtVerify(token, await importX509(key.certificatePem, 'RS256'), {
        issuer: `https://securetoken.google.com/${projectId}`,
        audience: projectId,
      }),
    ).rejects.toThrow(error);
  });

  it('sets the header kid and leaves out omitted claims', async () => {
    const key = await generateSigningKey();
    const token = await mintIdToken(key, { projectId, uid: 'u', kid: 'unknown-kid', omitClaims: ['exp', 'sub'] });
    expect(decodeProtectedHeader(token).kid).toBe('unknown-kid');
    const claims = decodeJwt(token);
    expect(claims.exp).toBeUndefined();
    expect(claims.sub).toBeUndefined();
    expect(claims.user_id).toBe('u');
  });

  it('describes a phone-only user like Firebase does', async () => {
    const key = await generateSigningKey();
    const claims = decodeJwt(await mintIdToken(key, { projectId, uid: 'u', phoneNumber: '+81901234567' }));
    expect(claims.phone_number).toBe('+81901234567');
    expect(claims.email).toBeUndefined();
    expect(claims.firebase).toEqual({ identities: { phone: ['+81901234567'] }, sign_in_provider: 'phone' });
  });
});

describe('loadOrCreateDevKey', () => {
  it('creates the key once and reloads the same key afterwards', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-dev-key-'));
    try {
      const created = await loadOrCreateDevKey(dir);
      expect((await stat(join(dir, 'signing-key.json'))).mode & 0o777).toBe(0o600);
      const loaded = await loadOrCreateDevKey(dir);
      expect(loaded.kid).toBe(created.kid);
      expect(loaded.certificatePem).toBe(created.certificatePem);
      // The reloaded private key signs tokens that the stored certificate verifies.
      const token = await mintIdToken(loaded, { projectId, uid: 'dev' });
      const { payload } = await jwtVerify(token, await importX509(created.certificatePem, 'RS256'));
      expect(payload.sub).toBe('dev');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('gives processes that create it at the same time one and the same key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-dev-key-'));
    try {
      const keys = await Promise.all([loadOrCreateDevKey(dir), loadOrCreateDevKey(dir), loadOrCreateDevKey(dir)]);
      const stored = await loadOrCreateDevKey(dir);
      expect(keys.map((k) => k.kid)).toEqual([stored.kid, stored.kid, stored.kid]);
      expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
