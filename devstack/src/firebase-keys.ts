import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';

import { link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { exportJWK, importX509, SignJWT } from 'jose';
import { cacheDir } from './paths';
import { createSelfSignedCertificate, toPem } from './self-signed-cert';

type CryptoKey = webcrypto.CryptoKey;

// Real Firebase-format token signing for tests and local runs: RSA keys with self-signed
// certificates, served in the exact shape of Google's securetoken x509 endpoint, and ID
// tokens with the claims Firebase Auth puts in them. Nothing here is a mock: the tokens are
// RS256 JWTs that any Firebase ID token verifier accepts once pointed at the key server.

/** Paths of Google's public-key endpoints for Firebase ID tokens, reproduced locally. */
export const X509_PATH = '/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com';
export const JWKS_PATH = '/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com';

export interface SigningKey {
  /** Key id: the JWT header `kid` and the key of the certificate in the x509 JSON. */
  kid: string;
  /** RSASSA-PKCS1-v1_5 SHA-256 private key, usable by jose's SignJWT with RS256. */
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** Self-signed X.509 certificate of the public key (PEM, `\n` line ends, trailing `\n`). */
  certificatePem: string;
}

const RSA_PARAMS = {
  name: 'RSASSA-PKCS1-v1_5',
  hash: 'SHA-256',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
} as const;

// Google's securetoken certificates use this subject.
const CERT_COMMON_NAME = 'securetoken.system.gserviceaccount.com';

/** A fresh RSA 2048 key and a self-signed certificate valid from an hour ago for `validDays`. */
export async function generateSigningKey(opts: { kid?: string; validDays?: number } = {}): Promise<SigningKey> {
  const keys = await webcrypto.subtle.generateKey(RSA_PARAMS, true, ['sign', 'verify']);
  const now = Date.now();
  const certificatePem = await createSelfSignedCertificate({
    keys,
    commonName: CERT_COMMON_NAME,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + (opts.validDays ?? 14) * 86_400_000),
  });
  // Google's kids are 40 hex characters.
  return { kid: opts.kid ?? randomBytes(20).toString('hex'), ...keys, certificatePem };
}

// ---------------------------------------------------------------------------------------
// Key server

export interface FirebaseKeyServerOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** Initial keys; one fresh key when omitted. The last one is the signing key. */
  keys?: SigningKey[];
  /** `Cache-Control: max-age` of the responses (default 3600). */
  maxAgeSeconds?: number;
}

export interface FirebaseKeyServer {
  /** Full URL of the x509 endpoint: `{"<kid>": "-----BEGIN CERTIFICATE-----\n..."}`. */
  readonly url: string;
  /** Full URL of the same keys as a JWK set (Google's `service_accounts/v1/jwk` endpoint). */
  readonly jwksUrl: string;
  /** Keys currently published, oldest first. */
  readonly keys: readonly SigningKey[];
  /** The newest key: the one tokens should be signed with. */
  readonly signingKey: SigningKey;
  /** Adds a new key (published next to the old ones) and makes it the signing key. */
  rotate(): Promise<SigningKey>;
  /** Stops publishing a key, as Google does some days after a rotation. */
  retire(kid: string): void;
  /** While set, both endpoints answer with this HTTP status and no keys (outage tests). */
  setOutage(status: number | null): void;
  /** How many times the keys were fetched (both endpoints, outage answers included). */
  requests(): number;
  close(): Promise<void>;
}

export async function createFirebaseKeyServer(opts: FirebaseKeyServerOptions = {}): Promise<FirebaseKeyServer> {
  const keys: SigningKey[] = opts.keys?.length ? [...opts.keys] : [await generateSigningKey()];
  const maxAge = opts.maxAgeSeconds ?? 3600;
  let fetches = 0;
  let outage: number | null = null;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || (path !== X509_PATH && path !== JWKS_PATH)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    fetches++;
    if (outage !== null) {
      res.writeHead(outage, { 'content-type': 'text/plain' }).end('key endpoint unavailable');
      return;
    }
    let body: string;
    if (path === X509_PATH) {
      body = `${JSON.stringify(Object.fromEntries(keys.map((k) => [k.kid, k.certificatePem])), null, 2)}\n`;
    } else {
      const jwks = await Promise.all(
        keys.map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: 'RS256', use: 'sig' })),
      );
      body = `${JSON.stringify({ keys: jwks }, null, 2)}\n`;
    }
    // The headers Google sends; verifiers take max-age from Cache-Control.
    res.writeHead(200, {
      'content-type': 'application/json; charset=UTF-8',
      'cache-control': `public, max-age=${maxAge}, must-revalidate, no-transform`,
      expires: new Date(Date.now() + maxAge * 1000).toUTCString(),
      date: new Date().toUTCString(),
    });
    res.end(body);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500).end(String(err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = opts.host ?? '127.0.0.1';
  const base = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url: `${base}${X509_PATH}`,
    jwksUrl: `${base}${JWKS_PATH}`,
    get keys() {
      return [...keys];
    },
    get signingKey() {
      const key = keys.at(-1);
      if (!key) throw new Error('the key server publishes no key (all retired)');
      return key;
    },
    async rotate() {
      const key = await generateSigningKey();
      keys.push(key);
      return key;
    },
    retire(kid) {
      const i = keys.findIndex((k) => k.kid === kid);
      if (i >= 0) keys.splice(i, 1);
    },
    setOutage(status) {
      outage = status;
    },
    requests: () => fetches,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

// ---------------------------------------------------------------------------------------
// Tokens

export interface MintIdTokenOptions {
  projectId: string;
  uid: string;
  /** Custom claims, merged last: a test may overwrite any standard claim with them. */
  claims?: Record<string, unknown>;
  email?: string;
  emailVerified?: boolean;
  phoneNumber?: string;
  name?: string;
  /** Default: 'password' with an email, 'phone' with only a phone number, else 'custom'. */
  signInProvider?: string;
  issuedAt?: Date;
  /** Seconds from issuedAt to exp (default 3600, Firebase's lifetime). */
  expiresIn?: number;
  /** Default: issuedAt. */
  authTime?: Date;
  /** Default: https://securetoken.google.com/<projectId>. */
  issuer?: string;
  /** Default: projectId. */
  audience?: string;
  /** Header kid (default: the key's kid). */
  kid?: string;
  /** Standard claims to leave out entirely (e.g. ['exp'] or ['sub']) to craft invalid tokens. */
  omitClaims?: string[];
}

/** An RS256 JWT with exactly the claims of a Firebase Auth ID token. */
export async function mintIdToken(key: SigningKey, opts: MintIdTokenOptions): Promise<string> {
  const iat = Math.floor((opts.issuedAt ?? new Date()).getTime() / 1000);
  const authTime = opts.authTime ? Math.floor(opts.authTime.getTime() / 1000) : iat;
  const identities: Record<string, string[]> = {};
  if (opts.email !== undefined) identities.email = [opts.email];
  if (opts.phoneNumber !== undefined) identities.phone = [opts.phoneNumber];
  const signInProvider =
    opts.signInProvider ??
    (opts.email !== undefined ? 'password' : opts.phoneNumber !== undefined ? 'phone' : 'custom');

  const payload: Record<string, unknown> = {
    ...(opts.name !== undefined ? { name: opts.name } : {}),
    iss: opts.issuer ?? `https://securetoken.google.com/${opts.projectId}`,
    aud: opts.audience ?? opts.projectId,
    auth_time: authTime,
    user_id: opts.uid,
    sub: opts.uid,
    iat,
    exp: iat + (opts.expiresIn ?? 3600),
    ...(opts.email !== undefined ? { email: opts.email, email_verified: opts.emailVerified ?? false } : {}),
    ...(opts.phoneNumber !== undefined ? { phone_number: opts.phoneNumber } : {}),
    firebase: { identities, sign_in_provider: signInProvider },
    ...opts.claims,
  };
  for (const claim of opts.omitClaims ?? []) delete payload[claim];

  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'RS256', kid: opts.kid ?? key.kid, typ: 'JWT' })
    .sign(key.privateKey);
}

// ---------------------------------------------------------------------------------------
// Persistent dev key for `npm start` and `npm run mint-token`

interface StoredKey {
  kid: string;
  privateKeyPem: string;
  certificatePem: string;
}

const DEV_KEY_FILE = 'signing-key.json';

/**
 * The dev signing key stored in `dir` (default `<repo>/.cache/dev-keys/signing-key.json`,
 * PKCS8 private key PEM + certificate PEM + kid), created on first use. A key whose
 * certificate expires within a day is replaced, so the file never needs manual care.
 */
export async function loadOrCreateDevKey(dir: string = cacheDir('dev-keys')): Promise<SigningKey> {
  const file = join(dir, DEV_KEY_FILE);
  const existing = await readStoredKey(file);
  if (existing) return existing;
  const expiring = await exists(file);

  const key = await generateSigningKey({ validDays: 365 });
  const stored: StoredKey = {
    kid: key.kid,
    privateKeyPem: toPem(new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', key.privateKey)), 'PRIVATE KEY'),
    certificatePem: key.certificatePem,
  };
  await mkdir(dir, { recursive: true });
  // Written aside, then put in place whole. A first key is linked, which fails when another
  // process (`npm start` and `npm run mint-token` on a fresh checkout) got there first: both
  // then use that one, or tokens would be signed by a key the key server does not serve.
  // An expiring key is simply replaced.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 });
  try {
    if (expiring) await rename(tmp, file);
    else await link(tmp, file);
  } catch (err) {
    const first = (err as NodeJS.ErrnoException).code === 'EEXIST' ? await readStoredKey(file) : undefined;
    if (!first) throw err;
    return first;
  } finally {
    await rm(tmp, { force: true });
  }
  return key;
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

async function readStoredKey(file: string): Promise<SigningKey | undefined> {
  let stored: StoredKey;
  try {
    stored = JSON.parse(await readFile(file, 'utf8')) as StoredKey;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read the dev signing key ${file}: ${(err as Error).message} (delete it to regenerate)`);
  }
  const cert = new X509Certificate(stored.certificatePem);
  if (new Date(cert.validTo).getTime() < Date.now() + 86_400_000) return undefined;
  const der = Buffer.from(stored.privateKeyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, RSA_PARAMS, true, ['sign']);
  const publicKey = await importX509(stored.certificatePem, 'RS256', { extractable: true });
  return { kid: stored.kid, privateKey, publicKey, certificatePem: stored.certificatePem };
}
