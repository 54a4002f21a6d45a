import { createHmac, createPublicKey, KeyObject, sign, webcrypto } from 'node:crypto';
import {
  generateSigningKey,
  type MintIdTokenOptions,
  mintIdToken,
  type SigningKey,
} from '@sekisho/devstack/firebase-keys';
import { createSelfSignedCertificate } from '@sekisho/devstack/self-signed-cert';
import { beforeAll, describe, expect, it } from 'vitest';
import { importCertificateKey } from './key-store';
import {
  type KeyLookup,
  MAX_TOKEN_LENGTH,
  type ResolveKey,
  VerifiedTokenCache,
  type VerifyResult,
  verifyFirebaseIdToken,
} from './verify';

// Real RS256 keys with real self-signed X.509 certificates (devstack's Firebase key
// fixture), real Firebase-format tokens, and a fixed clock.

const projectId = 'salon-test';
const issuedAt = new Date('2030-01-01T00:00:00Z');
const now = issuedAt.getTime() + 10 * 60_000;
const toleranceMs = 5_000;
const seconds = (ms: number) => Math.floor(ms / 1000);

let key: SigningKey;
let otherKey: SigningKey;
let resolveKey: ResolveKey;
/** The public keys as the key store holds them: node:crypto KeyObjects of the certificates. */
let publicKey: KeyObject;
let otherPublicKey: KeyObject;

beforeAll(async () => {
  [key, otherKey] = await Promise.all([generateSigningKey(), generateSigningKey()]);
  publicKey = importCertificateKey(key.certificatePem);
  otherPublicKey = importCertificateKey(otherKey.certificatePem);
  resolveKey = (kid) => (kid === key.kid ? { status: 'found', key: publicKey } : { status: 'unknown' });
});

const mint = (opts: Partial<MintIdTokenOptions> = {}, signer: SigningKey = key) =>
  mintIdToken(signer, { projectId, uid: 'user-1', issuedAt, ...opts });

const verify = (token: string, lookup: ResolveKey = resolveKey) =>
  verifyFirebaseIdToken(token, { projectId, resolveKey: lookup, now, clockToleranceMs: toleranceMs });

const b64 = (value: unknown) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** A JWS signed with RS256 by the test key (node:crypto): any header, any payload bytes. */
function signedRs256(header: unknown, payload: Uint8Array): string {
  const input = `${b64(header)}.${Buffer.from(payload).toString('base64url')}`;
  return `${input}.${sign('sha256', Buffer.from(input), KeyObject.from(key.privateKey)).toString('base64url')}`;
}

/** A token with the given header and the payload and signature of a valid one. */
async function withHeader(header: unknown): Promise<string> {
  const [, payload, signature] = (await mint()).split('.');
  return `${b64(header)}.${payload}.${signature}`;
}

function rejected(code: string, reason: string): Partial<VerifyResult> {
  return { ok: false, code, reason } as Partial<VerifyResult>;
}

const claimCases: Array<{ name: string; opts: Partial<MintIdTokenOptions>; code: string; reason: string }> = [
  {
    name: 'an issuer of another project',
    opts: { issuer: 'https://securetoken.google.com/other' },
    code: 'INVALID_TOKEN',
    reason: 'iss_mismatch',
  },
  {
    name: 'an issuer with a trailing slash',
    opts: { issuer: `https://securetoken.google.com/${projectId}/` },
    code: 'INVALID_TOKEN',
    reason: 'iss_mismatch',
  },
  {
    name: 'a Google accounts issuer',
    opts: { issuer: 'https://accounts.google.com' },
    code: 'INVALID_TOKEN',
    reason: 'iss_mismatch',
  },
  { name: 'no issuer', opts: { omitClaims: ['iss'] }, code: 'INVALID_TOKEN', reason: 'iss_mismatch' },
  {
    name: 'an audience of another project',
    opts: { audience: 'other' },
    code: 'INVALID_TOKEN',
    reason: 'aud_mismatch',
  },
  {
    name: 'the audience as an array',
    opts: { claims: { aud: [projectId] } },
    code: 'INVALID_TOKEN',
    reason: 'aud_mismatch',
  },
  { name: 'no audience', opts: { omitClaims: ['aud'] }, code: 'INVALID_TOKEN', reason: 'aud_mismatch' },
  { name: 'no sub', opts: { omitClaims: ['sub'] }, code: 'INVALID_TOKEN', reason: 'sub_invalid' },
  { name: 'an empty sub', opts: { uid: '' }, code: 'INVALID_TOKEN', reason: 'sub_invalid' },
  { name: 'a sub of 129 characters', opts: { uid: 'u'.repeat(129) }, code: 'INVALID_TOKEN', reason: 'sub_invalid' },
  { name: 'a numeric sub', opts: { claims: { sub: 42 } }, code: 'INVALID_TOKEN', reason: 'sub_invalid' },
  { name: 'no iat', opts: { omitClaims: ['iat'] }, code: 'INVALID_TOKEN', reason: 'iat_invalid' },
  {
    name: 'a string iat',
    opts: { claims: { iat: String(seconds(now)) } },
    code: 'INVALID_TOKEN',
    reason: 'iat_invalid',
  },
  {
    name: 'an iat beyond the clock tolerance',
    opts: { issuedAt: new Date(now + 6_000), authTime: issuedAt },
    code: 'INVALID_TOKEN',
    reason: 'iat_in_future',
  },
  { name: 'no auth_time', opts: { omitClaims: ['auth_time'] }, code: 'INVALID_TOKEN', reason: 'auth_time_invalid' },
  {
    name: 'an auth_time in the future',
    opts: { authTime: new Date(now + 60_000) },
    code: 'INVALID_TOKEN',
    reason: 'auth_time_in_future',
  },
  {
    name: 'an nbf in the future',
    opts: { claims: { nbf: seconds(now + 60_000) } },
    code: 'INVALID_TOKEN',
    reason: 'nbf_in_future',
  },
  { name: 'no exp', opts: { omitClaims: ['exp'] }, code: 'INVALID_TOKEN', reason: 'exp_invalid' },
  { name: 'a non-numeric exp', opts: { claims: { exp: 'tomorrow' } }, code: 'INVALID_TOKEN', reason: 'exp_invalid' },
  { name: 'an exp in the past', opts: { expiresIn: 60 }, code: 'TOKEN_EXPIRED', reason: 'expired' },
  {
    name: 'an exp exactly at the end of the tolerance',
    opts: { expiresIn: 600 - 5 },
    code: 'TOKEN_EXPIRED',
    reason: 'expired',
  },
  // A token that is wrong for this project must not be reported as merely expired.
  {
    name: 'an exp in the past and another audience',
    opts: { expiresIn: 60, audience: 'other' },
    code: 'INVALID_TOKEN',
    reason: 'aud_mismatch',
  },
];

describe('verifyFirebaseIdToken', () => {
  it('accepts a valid token and returns its identity claims', async () => {
    const token = await mint({ email: 'taro@example.com', emailVerified: true, phoneNumber: '+819012345678' });
    const result = await verify(token);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.claims).toMatchObject({
      uid: 'user-1',
      email: 'taro@example.com',
      emailVerified: true,
      phoneNumber: '+819012345678',
    });
    expect(result.claims.payload.firebase).toBeDefined();
  });

  it('keeps custom claims in the payload', async () => {
    const result = await verify(await mint({ claims: { tier: 'premium_customer' } }));
    expect(result.ok && result.claims.payload.tier).toBe('premium_customer');
  });

  it.each(claimCases)('rejects a token with $name', async ({ opts, code, reason }) => {
    expect(await verify(await mint(opts))).toMatchObject(rejected(code, reason));
  });

  const toleratedCases: Array<{ name: string; opts: Partial<MintIdTokenOptions> }> = [
    { name: 'a sub of 128 characters', opts: { uid: 'u'.repeat(128) } },
    { name: 'an iat within the clock tolerance', opts: { issuedAt: new Date(now + 4_000), authTime: issuedAt } },
    { name: 'an exp just inside the clock tolerance', opts: { expiresIn: 600 - 4 } },
    { name: 'an nbf in the past', opts: { claims: { nbf: seconds(now - 60_000) } } },
  ];

  it.each(toleratedCases)('accepts a token with $name', async ({ opts }) => {
    expect((await verify(await mint(opts))).ok).toBe(true);
  });

  describe('header and signature', () => {
    it('rejects alg none even with a known kid', async () => {
      expect(await verify(await withHeader({ alg: 'none', kid: key.kid }))).toMatchObject(
        rejected('INVALID_TOKEN', 'alg_not_allowed'),
      );
    });

    it('rejects an HS256 token whose secret is the public certificate', async () => {
      const input = `${b64({ alg: 'HS256', kid: key.kid })}.${b64({ sub: 'user-1' })}`;
      const token = `${input}.${createHmac('sha256', key.certificatePem).update(input).digest('base64url')}`;
      expect(await verify(token)).toMatchObject(rejected('INVALID_TOKEN', 'alg_not_allowed'));
    });

    it.each(['RS512', 'PS256', 'ES256', 'rs256', ''])('rejects alg %j', async (alg) => {
      expect(await verify(await withHeader({ alg, kid: key.kid }))).toMatchObject(
        rejected('INVALID_TOKEN', 'alg_not_allowed'),
      );
    });

    it.each([{ alg: 'RS256' }, { alg: 'RS256', kid: '' }, { alg: 'RS256', kid: 7 }])(
      'rejects a header without a usable kid: %j',
      async (header) => {
        expect(await verify(await withHeader(header))).toMatchObject(rejected('INVALID_TOKEN', 'kid_missing'));
      },
    );

    it('rejects a kid the key store does not know', async () => {
      expect(await verify(await mint({}, otherKey))).toMatchObject(rejected('INVALID_TOKEN', 'kid_unknown'));
    });

    it('is SERVICE_UNAVAILABLE, not INVALID_TOKEN, when no keys are loaded', async () => {
      const none: ResolveKey = async () => ({ status: 'unavailable' });
      expect(await verify(await mint(), none)).toMatchObject(rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'));
    });

    it('is SERVICE_UNAVAILABLE when the key lookup throws', async () => {
      const broken: ResolveKey = async () => {
        throw new Error('boom');
      };
      expect(await verify(await mint(), broken)).toMatchObject(rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'));
    });

    it('rejects a token signed by another key under a known kid', async () => {
      expect(await verify(await mint({ kid: key.kid }, otherKey))).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
    });

    it('rejects a token whose payload was changed after signing', async () => {
      const [header, payload, signature] = (await mint()).split('.');
      const changed = { ...JSON.parse(Buffer.from(payload as string, 'base64url').toString()), sub: 'admin' };
      expect(await verify(`${header}.${b64(changed)}.${signature}`)).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
    });

    it('rejects a token whose header was changed after signing', async () => {
      expect(await verify(await withHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT', x: 1 }))).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
    });

    it('rejects a token whose expiry passed and whose signature is wrong as invalid, not expired', async () => {
      expect(await verify(await mint({ kid: key.kid, expiresIn: 60 }, otherKey))).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
    });

    it.each([
      ['not JSON', new TextEncoder().encode('not json')],
      ['a JSON array', new TextEncoder().encode('["sub"]')],
      ['JSON null', new TextEncoder().encode('null')],
      ['invalid UTF-8', Uint8Array.of(0x7b, 0xff, 0x7d)],
    ])('rejects a correctly signed payload that is %s', async (_name, payload) => {
      const token = signedRs256({ alg: 'RS256', kid: key.kid }, payload);
      expect(await verify(token)).toMatchObject(rejected('INVALID_TOKEN', 'payload_invalid'));
    });
  });

  describe('with a verified-token cache', () => {
    const cached = (token: string, cache: VerifiedTokenCache, opts: { at?: number; lookup?: ResolveKey } = {}) =>
      verifyFirebaseIdToken(token, {
        projectId,
        resolveKey: opts.lookup ?? resolveKey,
        now: opts.at ?? now,
        clockToleranceMs: toleranceMs,
        cache,
      });

    it('remembers a token that passed and accepts it again with the same claims', async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint({ email: 'taro@example.com' });
      const first = await cached(token, cache);
      expect(cache.size).toBe(1);
      expect(first).not.toHaveProperty('cached');
      // The same claims, and it says the signature was not checked again.
      expect(await cached(token, cache)).toEqual({ ...first, cached: true });
    });

    it('checks the time again on every use: a remembered token still expires', async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint({ expiresIn: 3600 });
      expect((await cached(token, cache)).ok).toBe(true);
      expect(await cached(token, cache, { at: issuedAt.getTime() + 2 * 3_600_000 })).toMatchObject(
        rejected('TOKEN_EXPIRED', 'expired'),
      );
    });

    it('checks the project again on every use', async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint();
      expect((await cached(token, cache)).ok).toBe(true);
      const other = await verifyFirebaseIdToken(token, {
        projectId: 'other-project',
        resolveKey,
        now,
        clockToleranceMs: toleranceMs,
        cache,
      });
      expect(other).toMatchObject(rejected('INVALID_TOKEN', 'iss_mismatch'));
    });

    it('does not trust an entry once the key store answers with another key for the kid', async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint();
      expect((await cached(token, cache)).ok).toBe(true);
      const replaced: ResolveKey = async () => ({ status: 'found', key: otherPublicKey });
      expect(await cached(token, cache, { lookup: replaced })).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
      const gone: ResolveKey = async () => ({ status: 'unknown' });
      expect(await cached(token, cache, { lookup: gone })).toMatchObject(rejected('INVALID_TOKEN', 'kid_unknown'));
    });

    it("asks the key store for a remembered token's kid on every use", async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint();
      const asked: string[] = [];
      const recording: ResolveKey = (kid) => {
        asked.push(kid);
        return resolveKey(kid);
      };
      expect((await cached(token, cache, { lookup: recording })).ok).toBe(true);
      expect(await cached(token, cache, { lookup: recording })).toMatchObject({ ok: true, cached: true });
      expect(asked).toEqual([key.kid, key.kid]);
      const unavailable: ResolveKey = async () => ({ status: 'unavailable' });
      expect(await cached(token, cache, { lookup: unavailable })).toMatchObject(
        rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'),
      );
    });

    it('verifies a remembered token again once its kid has a new key object, then remembers that one', async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint();
      expect((await cached(token, cache)).ok).toBe(true);
      // A key refresh imports the same certificate again: a new KeyObject for the same kid.
      const reimported = importCertificateKey(key.certificatePem);
      const refreshed: ResolveKey = async (kid) =>
        kid === key.kid ? { status: 'found', key: reimported } : { status: 'unknown' };
      const again = await cached(token, cache, { lookup: refreshed });
      expect(again.ok).toBe(true);
      expect(again).not.toHaveProperty('cached');
      expect(await cached(token, cache, { lookup: refreshed })).toMatchObject({ ok: true, cached: true });
      expect(cache.size).toBe(1);
    });

    it('never remembers a token that failed', async () => {
      const cache = new VerifiedTokenCache(10);
      await cached(await mint({ expiresIn: 60 }), cache);
      await cached(await mint({ audience: 'other' }), cache);
      await cached(await mint({ kid: key.kid }, otherKey), cache);
      expect(cache.size).toBe(0);
    });

    it('holds at most maxEntries tokens, dropping the oldest; 0 turns it off', async () => {
      const cache = new VerifiedTokenCache(2);
      for (const uid of ['a', 'b', 'c']) await cached(await mint({ uid }), cache);
      expect(cache.size).toBe(2);
      const off = new VerifiedTokenCache(0);
      await cached(await mint(), off);
      expect(off.size).toBe(0);
    });
  });

  describe('synchronous RS256 with node:crypto', () => {
    // With the key at hand, the answer is a value, not a promise: no threadpool hop, no microtask.
    const sync = (token: string, lookup: ResolveKey = resolveKey, cache?: VerifiedTokenCache) => {
      const result = verifyFirebaseIdToken(token, {
        projectId,
        resolveKey: lookup,
        now,
        clockToleranceMs: toleranceMs,
        ...(cache ? { cache } : {}),
      });
      expect(result).not.toBeInstanceOf(Promise);
      return result as VerifyResult;
    };

    it('answers a valid, an expired, a wrong-kid and a wrong-alg token without a promise', async () => {
      expect(sync(await mint())).toMatchObject({ ok: true, claims: { uid: 'user-1' } });
      expect(sync(await mint({ expiresIn: 60 }))).toMatchObject(rejected('TOKEN_EXPIRED', 'expired'));
      expect(sync(await mint({ kid: 'not-a-kid' }))).toMatchObject(rejected('INVALID_TOKEN', 'kid_unknown'));
      expect(sync(await withHeader({ alg: 'RS384', kid: key.kid }))).toMatchObject(
        rejected('INVALID_TOKEN', 'alg_not_allowed'),
      );
    });

    it('refuses forged signatures of every shape with signature_invalid, never throwing', async () => {
      const [header, payload, signature] = (await mint()).split('.') as [string, string, string];
      const realSignature = Buffer.from(signature, 'base64url');
      const flipped = Buffer.from(realSignature);
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
      const forgeries = [
        flipped,
        Buffer.from('sig'),
        Buffer.alloc(1),
        Buffer.alloc(256),
        Buffer.alloc(256, 0xff),
        Buffer.alloc(257, 1),
        Buffer.concat([realSignature, Buffer.alloc(1)]),
        realSignature.subarray(1),
      ];
      for (const forged of forgeries) {
        expect(sync(`${header}.${payload}.${forged.toString('base64url')}`)).toBe(
          sync(`${header}.${payload}.${Buffer.from('sig').toString('base64url')}`),
        );
      }
      expect(sync(`${header}.${payload}.${flipped.toString('base64url')}`)).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
      // Signed by another key under this kid, and this key's signature over another payload.
      expect(sync(await mint({ kid: key.kid }, otherKey))).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
      const [, otherPayload] = (await mint({ uid: 'someone-else' })).split('.');
      expect(sync(`${header}.${otherPayload}.${signature}`)).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
    });

    it('refuses a header with crit (no JWS extension is understood)', async () => {
      const [, payload] = (await mint()).split('.');
      const token = signedRs256(
        { alg: 'RS256', kid: key.kid, crit: ['b64'], b64: true },
        Buffer.from(payload as string, 'base64url'),
      );
      expect(sync(token)).toMatchObject(rejected('INVALID_TOKEN', 'header_invalid'));
    });

    it('follows a key rotation: the new kid verifies, the old kid still does while published, not after', async () => {
      const rotated = await generateSigningKey();
      const rotatedKey = importCertificateKey(rotated.certificatePem);
      const both: ResolveKey = (kid) =>
        kid === key.kid
          ? { status: 'found', key: publicKey }
          : kid === rotated.kid
            ? { status: 'found', key: rotatedKey }
            : { status: 'unknown' };
      const onlyNew: ResolveKey = (kid) =>
        kid === rotated.kid ? { status: 'found', key: rotatedKey } : { status: 'unknown' };
      const newToken = await mint({}, rotated);
      const oldToken = await mint();
      expect(sync(newToken, both)).toMatchObject({ ok: true });
      expect(sync(oldToken, both)).toMatchObject({ ok: true });
      expect(sync(oldToken, onlyNew)).toMatchObject(rejected('INVALID_TOKEN', 'kid_unknown'));
      // The old key's signature is no good under the new key either.
      const [header] = newToken.split('.');
      const [, payload, signature] = oldToken.split('.');
      expect(sync(`${header}.${payload}.${signature}`, onlyNew)).toMatchObject(
        rejected('INVALID_TOKEN', 'signature_invalid'),
      );
    });

    it('waits for a key lookup that returns a promise, and a lookup that throws or rejects means no keys', async () => {
      const token = await mint();
      const later: ResolveKey = async (kid) => resolveKey(kid);
      const pending = verifyFirebaseIdToken(token, {
        projectId,
        resolveKey: later,
        now,
        clockToleranceMs: toleranceMs,
      });
      expect(pending).toBeInstanceOf(Promise);
      expect(await pending).toMatchObject({ ok: true });
      const throws: ResolveKey = () => {
        throw new Error('boom');
      };
      const rejects: ResolveKey = async () => {
        throw new Error('boom');
      };
      expect(sync(token, throws)).toMatchObject(rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'));
      expect(await verify(token, rejects)).toMatchObject(rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'));
      const cache = new VerifiedTokenCache(10);
      sync(token, resolveKey, cache);
      expect(sync(token, throws, cache)).toMatchObject(rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'));
      expect(
        await verifyFirebaseIdToken(token, {
          projectId,
          resolveKey: rejects,
          now,
          clockToleranceMs: toleranceMs,
          cache,
        }),
      ).toMatchObject(rejected('SERVICE_UNAVAILABLE', 'keys_unavailable'));
    });

    it('answers a remembered token synchronously, and never takes a token for another that ends the same', async () => {
      const cache = new VerifiedTokenCache(10);
      const token = await mint({ uid: 'user-a' });
      expect(sync(token, resolveKey, cache)).not.toHaveProperty('cached');
      expect(sync(token, resolveKey, cache)).toMatchObject({ ok: true, cached: true, claims: { uid: 'user-a' } });
      // Another payload before the same signature: the same cache key, not the same token.
      const [header, , signature] = token.split('.');
      const impostor = `${header}.${b64({ ...JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()), sub: 'user-b' })}.${signature}`;
      expect(sync(impostor, resolveKey, cache)).toMatchObject(rejected('INVALID_TOKEN', 'signature_invalid'));
      expect(sync(token, resolveKey, cache)).toMatchObject({ ok: true, cached: true, claims: { uid: 'user-a' } });
      expect(cache.size).toBe(1);
    });
  });

  describe('importCertificateKey', () => {
    it('refuses a certificate whose RSA key is under 2048 bits, an EC key, and what is not a certificate', async () => {
      const small = await webcrypto.subtle.generateKey(
        { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]) },
        true,
        ['sign', 'verify'],
      );
      const validity = { notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 3_600_000) };
      const smallPem = await createSelfSignedCertificate({ keys: small, commonName: 'small', ...validity });
      expect(() => importCertificateKey(smallPem)).toThrow(/1024 bits/);
      const ec = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
      const ecPem = await createSelfSignedCertificate({
        keys: ec as webcrypto.CryptoKeyPair,
        commonName: 'ec',
        issuer: { commonName: 'ca', privateKey: key.privateKey },
        ...validity,
      });
      expect(() => importCertificateKey(ecPem)).toThrow(/not an RSA key/);
      const spki = createPublicKey(key.certificatePem).export({ type: 'spki', format: 'pem' }) as string;
      expect(() => importCertificateKey(spki)).toThrow();
      expect(importCertificateKey(key.certificatePem).asymmetricKeyDetails?.modulusLength).toBe(2048);
    });
  });

  describe('garbage never throws', () => {
    const valid = () => mint();
    const cases: Array<[string, () => Promise<string> | string, string]> = [
      ['an empty string', () => '', 'malformed'],
      ['one segment', () => 'abc', 'malformed'],
      ['two segments', () => 'abc.def', 'malformed'],
      ['four segments', async () => `${await valid()}.abc`, 'malformed'],
      ['empty segments', () => '..', 'malformed'],
      ['an empty signature', async () => (await valid()).replace(/\.[^.]+$/, '.'), 'malformed'],
      ['non-base64url characters', () => '!!!.###.$$$', 'malformed'],
      ['padding characters', async () => `${await valid()}==`, 'malformed'],
      ['surrounding whitespace', async () => ` ${await valid()} `, 'malformed'],
      ['a header that is not JSON', () => `${b64('not json')}.${b64('{}')}.${b64('sig')}`, 'header_invalid'],
      ['a header that is JSON null', () => `${b64('null')}.${b64('{}')}.${b64('sig')}`, 'header_invalid'],
      ['a header that is a JSON array', () => `${b64('["RS256"]')}.${b64('{}')}.${b64('sig')}`, 'header_invalid'],
      ['a header that is a JSON string', () => `${b64('"RS256"')}.${b64('{}')}.${b64('sig')}`, 'header_invalid'],
      ['a token over the size limit', () => `${'a'.repeat(MAX_TOKEN_LENGTH)}.b.c`, 'token_too_large'],
      ['a megabyte of header', () => `${b64({ alg: 'RS256', kid: 'x'.repeat(1 << 20) })}.e30.c2ln`, 'token_too_large'],
    ];

    it.each(cases)('rejects %s', async (_name, make, reason) => {
      expect(await verify(await make())).toMatchObject(rejected('INVALID_TOKEN', reason));
    });

    it('never throws and never accepts on random input', async () => {
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}"';
      const lookups: KeyLookup[] = [];
      const counting: ResolveKey = async (kid) => {
        const result = await resolveKey(kid);
        lookups.push(result);
        return result;
      };
      // Deterministic pseudo-random strings (a linear congruential generator), some shaped like JWTs.
      let seed = 12345;
      const next = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed;
      };
      const randomText = (length: number) => Array.from({ length }, () => alphabet[next() % alphabet.length]).join('');
      for (let i = 0; i < 300; i++) {
        const token =
          i % 3 === 0
            ? `${b64({ alg: 'RS256', kid: key.kid })}.${randomText(next() % 60)}.${randomText(next() % 60)}`
            : randomText(next() % 200);
        const result = await verify(token, counting);
        expect(result.ok).toBe(false);
      }
      expect(lookups.length).toBeGreaterThan(0);
    });
  });
});

// The Auth emulator's ID tokens: the payload of a real Firebase-format token for a demo-
// project, the header {"alg":"none","typ":"JWT"} and an empty signature, as firebase-tools
// writes them (the gateway e2e test uses the emulator's own tokens).
describe('verifyFirebaseIdToken and the Auth emulator mode', () => {
  const demoProject = 'demo-salon';
  const unsigned = async (opts: Partial<MintIdTokenOptions> = {}, header: unknown = { alg: 'none', typ: 'JWT' }) => {
    const [, payload] = (await mint({ projectId: demoProject, ...opts })).split('.');
    return `${b64(header)}.${payload}.`;
  };
  const verifyAs = (token: string, acceptEmulatorTokens: boolean, project = demoProject) =>
    verifyFirebaseIdToken(token, {
      projectId: project,
      resolveKey,
      now,
      clockToleranceMs: toleranceMs,
      ...(acceptEmulatorTokens ? { acceptEmulatorTokens } : {}),
    });

  it('refuses an unsigned token outside the mode, as before it existed', async () => {
    expect(await verifyAs(await unsigned(), false)).toMatchObject(rejected('INVALID_TOKEN', 'malformed'));
    // With something in the signature's place it is the alg that is refused.
    expect(await verifyAs(`${await unsigned()}c2ln`, false)).toMatchObject(
      rejected('INVALID_TOKEN', 'alg_not_allowed'),
    );
  });

  it('accepts an unsigned token for a demo- project in the mode, with its claims', async () => {
    const result = await verifyAs(await unsigned({ email: 'hana@example.com', claims: { tier: 'vip' } }), true);
    expect(result).toMatchObject({ ok: true, claims: { uid: 'user-1', email: 'hana@example.com' } });
    expect(result.ok && result.claims.payload.tier).toBe('vip');
    expect(result.ok && result.cached).toBeUndefined();
  });

  it('refuses unsigned tokens in the mode when the project is not a demo- one', async () => {
    const token = await unsigned({ projectId: 'salon-prod' });
    expect(await verifyAs(token, true, 'salon-prod')).toMatchObject(rejected('INVALID_TOKEN', 'alg_not_allowed'));
  });

  it.each([
    ['alg none with a signature', async () => `${await unsigned()}c2ln`, 'alg_not_allowed'],
    ['alg RS256 without a signature', () => unsigned({}, { alg: 'RS256', kid: key.kid }), 'alg_not_allowed'],
    ['alg "None"', () => unsigned({}, { alg: 'None' }), 'alg_not_allowed'],
    ['no alg', () => unsigned({}, { typ: 'JWT' }), 'alg_not_allowed'],
    ['a header that is not JSON', async () => `${b64('nope')}.${(await unsigned()).split('.')[1]}.`, 'header_invalid'],
    ['a payload that is not JSON', async () => `${b64({ alg: 'none' })}.${b64('[1]')}.`, 'payload_invalid'],
    ['an empty payload', async () => `${b64({ alg: 'none' })}..`, 'malformed'],
  ])('refuses %s in the mode', async (_name, make, reason) => {
    expect(await verifyAs(await make(), true)).toMatchObject(rejected('INVALID_TOKEN', reason));
  });

  it.each(claimCases)('checks every claim of an unsigned token in the mode: $name', async ({ opts, code, reason }) => {
    expect(await verifyAs(await unsigned(opts), true)).toMatchObject(rejected(code, reason));
  });

  it('still verifies signed tokens in the mode', async () => {
    expect((await verifyAs(await mint({ projectId: demoProject }), true)).ok).toBe(true);
    const [header, payload] = (await mint({ projectId: demoProject })).split('.');
    const [, , signature] = (await mint({ projectId: demoProject, uid: 'other' })).split('.');
    expect(await verifyAs(`${header}.${payload}.${signature}`, true)).toMatchObject(
      rejected('INVALID_TOKEN', 'signature_invalid'),
    );
  });
});
