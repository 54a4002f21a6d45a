import { type CryptoKey, compactVerify } from 'jose';

// Verification of a Firebase Auth ID token, following Firebase's rules for third-party
// verifiers: RS256 signed by one of Google's securetoken keys, issued for this project,
// not expired, issued and authenticated in the past, with a usable `sub` (the uid).
// Given the same key lookup and `now`, the result is always the same, and no input —
// however malformed — makes it throw: every failure is a value with a reason.

/** Firebase ID tokens are about 1 KB (custom claims are capped at 1000 bytes); anything far larger is not one. */
export const MAX_TOKEN_LENGTH = 8192;
/** Firebase's own limit on a uid. */
export const MAX_UID_LENGTH = 128;

export type KeyLookup = { status: 'found'; key: CryptoKey } | { status: 'unknown' } | { status: 'unavailable' };
/** Finds the public key of a `kid`; 'unavailable' when no keys could be loaded at all. */
export type ResolveKey = (kid: string) => Promise<KeyLookup>;

/** Internal reason of a rejection: for logs and metrics, never shown to the client. */
export type RejectReason =
  | 'token_too_large'
  | 'malformed'
  | 'header_invalid'
  | 'alg_not_allowed'
  | 'kid_missing'
  | 'kid_unknown'
  | 'keys_unavailable'
  | 'signature_invalid'
  | 'payload_invalid'
  | 'iss_mismatch'
  | 'aud_mismatch'
  | 'sub_invalid'
  | 'iat_invalid'
  | 'iat_in_future'
  | 'auth_time_invalid'
  | 'auth_time_in_future'
  | 'nbf_in_future'
  | 'exp_invalid'
  | 'expired';

export const rejectReasons: readonly RejectReason[] = [
  'token_too_large',
  'malformed',
  'header_invalid',
  'alg_not_allowed',
  'kid_missing',
  'kid_unknown',
  'keys_unavailable',
  'signature_invalid',
  'payload_invalid',
  'iss_mismatch',
  'aud_mismatch',
  'sub_invalid',
  'iat_invalid',
  'iat_in_future',
  'auth_time_invalid',
  'auth_time_in_future',
  'nbf_in_future',
  'exp_invalid',
  'expired',
];

export interface FirebaseClaims {
  /** `sub`, which Firebase sets to the user's uid. */
  uid: string;
  email?: string;
  emailVerified?: boolean;
  phoneNumber?: string;
  /** The whole verified payload, for custom claims such as the group. */
  payload: Readonly<Record<string, unknown>>;
}

export type VerifyResult =
  | {
      ok: true;
      claims: FirebaseClaims;
      /** Set when the signature was not checked again: the token was in the verified-token cache. */
      cached?: true;
    }
  | {
      ok: false;
      /** TOKEN_EXPIRED only when a refreshed token would pass; SERVICE_UNAVAILABLE when no keys are loaded. */
      code: 'TOKEN_EXPIRED' | 'INVALID_TOKEN' | 'SERVICE_UNAVAILABLE';
      reason: RejectReason;
    };

export interface VerifyOptions {
  projectId: string;
  resolveKey: ResolveKey;
  /** Current time, ms since the epoch. */
  now: number;
  /** Allowed clock skew between Google and this host, ms. */
  clockToleranceMs: number;
  /** Tokens whose signature was already checked; see VerifiedTokenCache. */
  cache?: VerifiedTokenCache;
  /**
   * The Auth emulator mode (development only): also accept the emulator's unsigned tokens,
   * `{"alg":"none"}` with an empty signature, when the project is a demo- one. Every claim
   * is checked as for a signed token.
   */
  acceptEmulatorTokens?: boolean;
}

/** The emulator refuses any other project id; a real project's tokens are never unsigned. */
export const isDemoProject = (projectId: string) => projectId.startsWith('demo-');

/**
 * Remembers the payload of tokens that passed every check, with the key that checked
 * the signature, so a client's next requests with the same token skip the RSA
 * verification (most of the cost of a Check). Only the signature is remembered: the
 * claims, time included, are checked again on every use, and an entry counts only
 * while the key store still returns the very same key for its kid. Bounded: the
 * oldest entry goes when it is full.
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, CachedToken>();

  constructor(readonly maxEntries: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry of exactly this token string (header, payload and signature), if it passed before. */
  entryFor(token: string): CachedToken | undefined {
    return this.entries.get(token);
  }

  /** A token verified again (its kid's key changed) replaces its old entry. */
  remember(token: string, kid: string, key: CryptoKey, payload: Readonly<Record<string, unknown>>): void {
    if (this.maxEntries <= 0) return;
    if (!this.entries.delete(token) && this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(token, { kid, key, payload });
  }
}

/**
 * A verified token: the header's kid (its alg was RS256, or it would not be here), the key that
 * checked its signature and its frozen payload. Keyed by the whole token, so the header a hit
 * stands for is the one that was parsed.
 */
interface CachedToken {
  readonly kid: string;
  readonly key: CryptoKey;
  readonly payload: Readonly<Record<string, unknown>>;
}

const segment = /^[A-Za-z0-9_-]+$/;

export async function verifyFirebaseIdToken(token: string, opts: VerifyOptions): Promise<VerifyResult> {
  if (typeof token !== 'string') return invalid('malformed');
  if (token.length > MAX_TOKEN_LENGTH) return invalid('token_too_large');

  // A token verified before (the very same string) skips the split, the segment regex and the
  // header's base64 and JSON: its kid was kept with it. The key is still looked up, so the
  // entry counts only while the key store returns the key that checked it, and every claim,
  // time included, is checked again below.
  const known = opts.cache?.entryFor(token);
  if (known) {
    let lookup: KeyLookup;
    try {
      lookup = await opts.resolveKey(known.kid);
    } catch {
      return { ok: false, code: 'SERVICE_UNAVAILABLE', reason: 'keys_unavailable' };
    }
    if (lookup.status === 'unavailable') return { ok: false, code: 'SERVICE_UNAVAILABLE', reason: 'keys_unavailable' };
    if (lookup.status === 'unknown') return invalid('kid_unknown');
    if (lookup.key === known.key) {
      const result = checkClaims(known.payload, opts);
      return result.ok ? { ...result, cached: true } : result;
    }
    // The kid now has another key: verify the signature again, from the start.
  }

  const parts = token.split('.');
  if (opts.acceptEmulatorTokens && parts.length === 3 && parts[2] === '') return verifyEmulatorToken(parts, opts);
  if (parts.length !== 3 || !parts.every((part) => segment.test(part))) return invalid('malformed');

  // The header is checked before any key lookup, so tokens that cannot be Firebase's
  // (alg none, HS256, no kid) never cost a key fetch.
  const header = parseJsonObject(Buffer.from(parts[0] as string, 'base64url'));
  if (!header) return invalid('header_invalid');
  if (header.alg !== 'RS256') return invalid('alg_not_allowed');
  if (typeof header.kid !== 'string' || header.kid === '') return invalid('kid_missing');

  let lookup: KeyLookup;
  try {
    lookup = await opts.resolveKey(header.kid);
  } catch {
    return { ok: false, code: 'SERVICE_UNAVAILABLE', reason: 'keys_unavailable' };
  }
  if (lookup.status === 'unavailable') return { ok: false, code: 'SERVICE_UNAVAILABLE', reason: 'keys_unavailable' };
  if (lookup.status === 'unknown') return invalid('kid_unknown');

  let payloadBytes: Uint8Array;
  try {
    ({ payload: payloadBytes } = await compactVerify(token, lookup.key, { algorithms: ['RS256'] }));
  } catch {
    return invalid('signature_invalid');
  }
  const payload = parseJsonObject(payloadBytes);
  if (!payload) return invalid('payload_invalid');
  const result = checkClaims(Object.freeze(payload), opts);
  if (result.ok) opts.cache?.remember(token, header.kid, lookup.key, result.claims.payload);
  return result;
}

// The Auth emulator signs nothing: its ID token is `header.payload.` with alg none. Only
// that exact shape, for a demo- project, and never cached (there is no signature to save).
function verifyEmulatorToken(parts: string[], opts: VerifyOptions): VerifyResult {
  const [header64, payload64] = parts as [string, string, string];
  if (!segment.test(header64) || !segment.test(payload64)) return invalid('malformed');
  const header = parseJsonObject(Buffer.from(header64, 'base64url'));
  if (!header) return invalid('header_invalid');
  if (header.alg !== 'none' || !isDemoProject(opts.projectId)) return invalid('alg_not_allowed');
  const payload = parseJsonObject(Buffer.from(payload64, 'base64url'));
  if (!payload) return invalid('payload_invalid');
  return checkClaims(Object.freeze(payload), opts);
}

// Order matters: a token for another project, or one that was never valid, is
// INVALID_TOKEN even when it has also expired. TOKEN_EXPIRED tells the client that
// refreshing the token will help, so it is the last check.
function checkClaims(payload: Readonly<Record<string, unknown>>, opts: VerifyOptions): VerifyResult {
  const latest = opts.now + opts.clockToleranceMs;
  const { iss, aud, sub, iat, auth_time: authTime, nbf, exp } = payload;

  if (iss !== `https://securetoken.google.com/${opts.projectId}`) return invalid('iss_mismatch');
  if (aud !== opts.projectId) return invalid('aud_mismatch');
  if (typeof sub !== 'string' || sub === '' || sub.length > MAX_UID_LENGTH) return invalid('sub_invalid');
  if (!isTimestamp(iat)) return invalid('iat_invalid');
  if (iat * 1000 > latest) return invalid('iat_in_future');
  if (!isTimestamp(authTime)) return invalid('auth_time_invalid');
  if (authTime * 1000 > latest) return invalid('auth_time_in_future');
  if (nbf !== undefined && (!isTimestamp(nbf) || nbf * 1000 > latest)) return invalid('nbf_in_future');
  if (!isTimestamp(exp)) return invalid('exp_invalid');
  if (exp * 1000 + opts.clockToleranceMs <= opts.now) return { ok: false, code: 'TOKEN_EXPIRED', reason: 'expired' };

  return {
    ok: true,
    claims: {
      uid: sub,
      ...(typeof payload.email === 'string' ? { email: payload.email } : {}),
      ...(typeof payload.email_verified === 'boolean' ? { emailVerified: payload.email_verified } : {}),
      ...(typeof payload.phone_number === 'string' ? { phoneNumber: payload.phone_number } : {}),
      payload,
    },
  };
}

function invalid(reason: RejectReason): VerifyResult {
  return { ok: false, code: 'INVALID_TOKEN', reason };
}

function isTimestamp(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(utf8.decode(bytes));
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
