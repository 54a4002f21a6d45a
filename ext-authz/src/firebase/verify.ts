import { type KeyObject, verify as verifySignature } from 'node:crypto';

// Verification of a Firebase Auth ID token, following Firebase's rules for third-party
// verifiers: RS256 signed by one of Google's securetoken keys, issued for this project,
// not expired, issued and authenticated in the past, with a usable `sub` (the uid).
// Given the same key lookup and `now`, the result is always the same, and no input —
// however malformed — makes it throw: every failure is a value with a reason.

/** Firebase ID tokens are about 1 KB (custom claims are capped at 1000 bytes); anything far larger is not one. */
export const MAX_TOKEN_LENGTH = 8192;
/** Firebase's own limit on a uid. */
export const MAX_UID_LENGTH = 128;

/** `key`: an RSA public key (≥ 2048 bits) as a node:crypto KeyObject, built once per certificate. */
export type KeyLookup = { status: 'found'; key: KeyObject } | { status: 'unknown' } | { status: 'unavailable' };
/**
 * Finds the public key of a `kid`; 'unavailable' when no keys could be loaded at all. A known
 * kid is answered synchronously (no promise, no microtask); only a lookup that has to wait for
 * a fetch returns a promise.
 */
export type ResolveKey = (kid: string) => KeyLookup | Promise<KeyLookup>;

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
 * How many characters of a token's end key the verified-token cache. A token ends with its
 * RS256 signature (342 base64url characters for a 2048-bit key), which only the key's owner can
 * make, so its last characters tell verified tokens apart; hashing 32 of them instead of the
 * whole ~900-character token is the saving. A hit still compares the whole token.
 */
const cacheKeyLength = 32;

/**
 * Remembers the payload of tokens that passed every check, with the key that checked
 * the signature, so a client's next requests with the same token skip the RSA
 * verification (most of the cost of a Check). Only the signature is remembered: the
 * claims, time included, are checked again on every use, and an entry counts only
 * while the key store still returns the very same key for its kid. Bounded: the
 * oldest entry goes when it is full.
 *
 * Keyed by the token's last characters (its signature's end), and an entry is used only when
 * its whole token equals the one presented: two tokens sharing that end are two different
 * tokens, and the second one verified replaces the first (a miss, never a wrong hit).
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, CachedToken>();

  constructor(readonly maxEntries: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry of exactly this token string (header, payload and signature), if it passed before. */
  entryFor(token: string): CachedToken | undefined {
    if (this.maxEntries <= 0) return undefined;
    const entry = this.entries.get(token.slice(-cacheKeyLength));
    return entry !== undefined && entry.token === token ? entry : undefined;
  }

  /** A token verified again (its kid's key changed) replaces its old entry. */
  remember(token: string, kid: string, key: KeyObject, claims: FirebaseClaims): void {
    if (this.maxEntries <= 0) return;
    const cacheKey = token.slice(-cacheKeyLength);
    if (!this.entries.delete(cacheKey) && this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    // The answer a hit gives once its claims pass again: built once, shared by every hit.
    const hit: VerifyResult = Object.freeze({ ok: true, claims: Object.freeze(claims), cached: true });
    this.entries.set(cacheKey, { token, kid, key, hit });
  }
}

/**
 * A verified token: the whole token (compared on every hit), the header's kid (its alg was
 * RS256, or it would not be here), the key that checked its signature, and the frozen answer
 * of a hit, whose claims hold the frozen payload.
 */
interface CachedToken {
  readonly token: string;
  readonly kid: string;
  readonly key: KeyObject;
  readonly hit: VerifyResult & { ok: true };
}

const segment = /^[A-Za-z0-9_-]+$/;
const keysUnavailable: VerifyResult = Object.freeze({
  ok: false,
  code: 'SERVICE_UNAVAILABLE',
  reason: 'keys_unavailable',
});

/**
 * Synchronous whenever the kid's key is already held (the key store answers a known kid
 * without a promise): the RS256 check is node:crypto's one-shot `verify` on this thread, with no
 * threadpool hop and no promise. Only a token whose kid makes the key store fetch returns a
 * promise. Never throws, never rejects.
 */
export function verifyFirebaseIdToken(token: string, opts: VerifyOptions): VerifyResult | Promise<VerifyResult> {
  if (typeof token !== 'string') return invalid('malformed');
  if (token.length > MAX_TOKEN_LENGTH) return invalid('token_too_large');

  // A token verified before (the very same string) skips the split, the segment regex and the
  // header's base64 and JSON: its kid was kept with it. The key is still looked up, so the
  // entry counts only while the key store returns the key that checked it, and every claim,
  // time included, is checked again.
  const known = opts.cache?.entryFor(token);
  if (known) {
    const lookup = lookUp(opts, known.kid);
    return lookup instanceof Promise
      ? lookup.then((found) => afterCachedLookup(found, known, token, opts))
      : afterCachedLookup(lookup, known, token, opts);
  }
  return verifyUncached(token, opts);
}

function afterCachedLookup(
  lookup: KeyLookup,
  known: CachedToken,
  token: string,
  opts: VerifyOptions,
): VerifyResult | Promise<VerifyResult> {
  if (lookup.status === 'unavailable') return keysUnavailable;
  if (lookup.status === 'unknown') return invalid('kid_unknown');
  if (lookup.key === known.key) return claimsRefusal(known.hit.claims.payload, opts) ?? known.hit;
  // The kid now has another key: verify the signature again, from the start.
  return verifyUncached(token, opts);
}

function verifyUncached(token: string, opts: VerifyOptions): VerifyResult | Promise<VerifyResult> {
  const parts = token.split('.');
  if (opts.acceptEmulatorTokens && parts.length === 3 && parts[2] === '') return verifyEmulatorToken(parts, opts);
  if (parts.length !== 3) return invalid('malformed');
  const [header64, payload64, signature64] = parts as [string, string, string];
  if (!segment.test(header64) || !segment.test(payload64) || !segment.test(signature64)) return invalid('malformed');

  // The header is checked before any key lookup, so tokens that cannot be Firebase's
  // (alg none, HS256, no kid) never cost a key fetch.
  const header = headerCheck(header64);
  if (typeof header !== 'string') return invalid(header.reason);
  const kid = header;

  const lookup = lookUp(opts, kid);
  const signed = { token, kid, payload64, signature64 };
  return lookup instanceof Promise
    ? lookup.then((found) => checkSigned(found, signed, opts))
    : checkSigned(lookup, signed, opts);
}

/**
 * The kid of a JWS header segment that may be a Firebase ID token's, or why not. Every token a
 * key signs has the same header (`{"alg":"RS256","kid":…,"typ":"JWT"}`), so the answer for a
 * segment is kept (bounded, the oldest going first): no base64 and JSON of the header per token.
 */
function headerCheck(header64: string): string | { reason: RejectReason } {
  const known = headerChecks.get(header64);
  if (known !== undefined) return known;
  const checked = checkHeader(parseJsonObject(Buffer.from(header64, 'base64url')));
  if (headerChecks.size >= maxHeaderChecks) headerChecks.delete(headerChecks.keys().next().value as string);
  headerChecks.set(header64, checked);
  return checked;
}

const headerChecks = new Map<string, string | { reason: RejectReason }>();
const maxHeaderChecks = 256;

function checkHeader(header: Record<string, unknown> | undefined): string | { reason: RejectReason } {
  if (!header) return { reason: 'header_invalid' };
  if (header.alg !== 'RS256') return { reason: 'alg_not_allowed' };
  if (typeof header.kid !== 'string' || header.kid === '') return { reason: 'kid_missing' };
  // JWS `crit` (RFC 7515 §4.1.11) names extensions a verifier must understand; Firebase uses
  // none, so any is refused (as jose refused every one but `b64` before).
  if (header.crit !== undefined) return { reason: 'header_invalid' };
  return header.kid;
}

const noKeys: KeyLookup = Object.freeze({ status: 'unavailable' });

/** The key lookup, a throw or rejection of which means the keys are unavailable. */
function lookUp(opts: VerifyOptions, kid: string): KeyLookup | Promise<KeyLookup> {
  try {
    const lookup = opts.resolveKey(kid);
    return lookup instanceof Promise ? lookup.catch(() => noKeys) : lookup;
  } catch {
    return noKeys;
  }
}

function checkSigned(
  lookup: KeyLookup,
  signed: { token: string; kid: string; payload64: string; signature64: string },
  opts: VerifyOptions,
): VerifyResult {
  if (lookup.status === 'unavailable') return keysUnavailable;
  if (lookup.status === 'unknown') return invalid('kid_unknown');
  if (!rs256Valid(signed.token, signed.signature64, lookup.key)) return invalid('signature_invalid');
  const payload = parseJsonObject(Buffer.from(signed.payload64, 'base64url'));
  if (!payload) return invalid('payload_invalid');
  Object.freeze(payload);
  const refusal = claimsRefusal(payload, opts);
  if (refusal !== undefined) return refusal;
  const claims = claimsOf(payload);
  opts.cache?.remember(signed.token, signed.kid, lookup.key, claims);
  return { ok: true, claims };
}

/**
 * RSASSA-PKCS1-v1_5 with SHA-256 over the JWS signing input (`header.payload`, ASCII), with
 * the key store's KeyObject. A wrong signature is `false`, not an exception; anything node:crypto
 * does throw (a key of another type) is a failed signature too.
 */
function rs256Valid(token: string, signature64: string, key: KeyObject): boolean {
  const signingInput = Buffer.from(token.slice(0, token.length - signature64.length - 1), 'latin1');
  try {
    return verifySignature('sha256', signingInput, key, Buffer.from(signature64, 'base64url'));
  } catch {
    return false;
  }
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
  Object.freeze(payload);
  return claimsRefusal(payload, opts) ?? { ok: true, claims: claimsOf(payload) };
}

// Order matters: a token for another project, or one that was never valid, is
// INVALID_TOKEN even when it has also expired. TOKEN_EXPIRED tells the client that
// refreshing the token will help, so it is the last check. undefined: every claim passes.
function claimsRefusal(payload: Readonly<Record<string, unknown>>, opts: VerifyOptions): VerifyResult | undefined {
  const latest = opts.now + opts.clockToleranceMs;
  const { iss, aud, sub, iat, auth_time: authTime, nbf, exp } = payload;

  if (typeof iss !== 'string' || !isIssuerOf(iss, opts.projectId)) return invalid('iss_mismatch');
  if (aud !== opts.projectId) return invalid('aud_mismatch');
  if (typeof sub !== 'string' || sub === '' || sub.length > MAX_UID_LENGTH) return invalid('sub_invalid');
  if (!isTimestamp(iat)) return invalid('iat_invalid');
  if (iat * 1000 > latest) return invalid('iat_in_future');
  if (!isTimestamp(authTime)) return invalid('auth_time_invalid');
  if (authTime * 1000 > latest) return invalid('auth_time_in_future');
  if (nbf !== undefined && (!isTimestamp(nbf) || nbf * 1000 > latest)) return invalid('nbf_in_future');
  if (!isTimestamp(exp)) return invalid('exp_invalid');
  if (exp * 1000 + opts.clockToleranceMs <= opts.now) return expired;
  return undefined;
}

const issuerPrefix = 'https://securetoken.google.com/';

/** `iss` = `https://securetoken.google.com/<project>`, compared without building the string. */
function isIssuerOf(iss: string, projectId: string): boolean {
  return (
    iss.length === issuerPrefix.length + projectId.length && iss.startsWith(issuerPrefix) && iss.endsWith(projectId)
  );
}

/** The claims of a payload that passed claimsRefusal (`sub` is then a usable uid). */
function claimsOf(payload: Readonly<Record<string, unknown>>): FirebaseClaims {
  const claims: FirebaseClaims = { uid: payload.sub as string, payload };
  if (typeof payload.email === 'string') claims.email = payload.email;
  if (typeof payload.email_verified === 'boolean') claims.emailVerified = payload.email_verified;
  if (typeof payload.phone_number === 'string') claims.phoneNumber = payload.phone_number;
  return claims;
}

const expired: VerifyResult = Object.freeze({ ok: false, code: 'TOKEN_EXPIRED', reason: 'expired' });
const rejections = new Map<RejectReason, VerifyResult>(
  rejectReasons.map((reason) => [reason, Object.freeze({ ok: false, code: 'INVALID_TOKEN', reason })]),
);

/** One frozen result per reason: a refusal allocates nothing. */
function invalid(reason: RejectReason): VerifyResult {
  return rejections.get(reason) as VerifyResult;
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
