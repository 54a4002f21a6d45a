import { type KeyObject, X509Certificate } from 'node:crypto';
import type { KeyLookup } from './verify';

// Google's public keys for Firebase ID tokens, from the x509 endpoint (a JSON object
// kid → PEM certificate). Keys are cached for the response's Cache-Control max-age and
// refreshed ahead of expiry in the background. A failed refresh keeps the old keys for
// a bounded grace period past their expiry: a short outage of Google's endpoint must
// not log every user out, but keys Google may have withdrawn are not trusted forever.
// An unknown kid triggers at most one refetch per interval, so tokens with made-up
// kids cannot hammer the endpoint.

export const GOOGLE_SECURETOKEN_X509_URL =
  'https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com';

export type RefreshTrigger = 'initial' | 'scheduled' | 'unknown_kid';

export interface RefreshEvent {
  ok: boolean;
  trigger: RefreshTrigger;
  /** Keys held after the attempt (the old ones when it failed). */
  keyCount: number;
  durationMs: number;
  error?: string;
}

export interface KeyStoreOptions {
  url: string;
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** ms since the epoch. */
  now?: () => number;
  fetchTimeoutMs?: number;
  /** Minimum time between refetches caused by an unknown kid. */
  unknownKidIntervalMs?: number;
  /** How long before expiry the background refresh starts (at most half the lifetime). */
  refreshAheadMs?: number;
  /** Lifetime when the response has no max-age; max-ages are clamped to [min, max]. */
  defaultMaxAgeMs?: number;
  minMaxAgeMs?: number;
  maxMaxAgeMs?: number;
  /** How long past their expiry keys stay in use while every refresh fails; then none are (503). */
  maxStaleMs?: number;
  /** Wait after a failed refresh before the background tries again. */
  retryAfterFailureMs?: number;
  /** How often start()'s timer checks whether a refresh is due. */
  checkIntervalMs?: number;
  onRefresh?: (event: RefreshEvent) => void;
}

export interface KeyStoreStatus {
  keyCount: number;
  kids: string[];
  /** undefined until the first attempt finished. */
  lastRefreshOk: boolean | undefined;
  lastAttemptAt: string | undefined;
  lastSuccessAt: string | undefined;
  expiresAt: string | undefined;
  lastError: string | undefined;
}

// Google's response is about 4 KB; a megabyte is certainly not a key list.
const MAX_BODY_BYTES = 1 << 20;

/**
 * The RS256 public key of a PEM X.509 certificate, as a node:crypto KeyObject (built once per
 * certificate; every verification reuses it). Throws unless it is a certificate with an RSA
 * key of at least 2048 bits (RFC 7518 §3.3).
 */
export function importCertificateKey(pem: string): KeyObject {
  const key = new X509Certificate(pem).publicKey;
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`not an RSA key (${key.asymmetricKeyType ?? 'unknown type'})`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048) throw new Error(`an RSA key of ${bits} bits, under RS256's 2048`);
  return key;
}

/** A held key: its certificate, and the lookup answer every Check for its kid shares. */
interface HeldKey {
  pem: string;
  found: KeyLookup & { status: 'found' };
}

export class FirebaseKeyStore {
  private keys = new Map<string, HeldKey>();
  private expiresAt: number | undefined;
  private nextRefreshAt = 0;
  private lastUnknownKidFetchAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<boolean> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private last: { ok: boolean; at: number; error?: string } | undefined;
  private lastSuccessAt: number | undefined;

  private readonly fetch: NonNullable<KeyStoreOptions['fetch']>;
  private readonly now: () => number;
  private readonly o: Required<Omit<KeyStoreOptions, 'fetch' | 'now' | 'onRefresh'>> &
    Pick<KeyStoreOptions, 'onRefresh'>;

  constructor(opts: KeyStoreOptions) {
    this.fetch = opts.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.now = opts.now ?? Date.now;
    this.o = {
      url: opts.url,
      fetchTimeoutMs: opts.fetchTimeoutMs ?? 5_000,
      unknownKidIntervalMs: opts.unknownKidIntervalMs ?? 30_000,
      refreshAheadMs: opts.refreshAheadMs ?? 5 * 60_000,
      defaultMaxAgeMs: opts.defaultMaxAgeMs ?? 60 * 60_000,
      minMaxAgeMs: opts.minMaxAgeMs ?? 60_000,
      maxMaxAgeMs: opts.maxMaxAgeMs ?? 24 * 60 * 60_000,
      maxStaleMs: opts.maxStaleMs ?? 24 * 60 * 60_000,
      retryAfterFailureMs: opts.retryAfterFailureMs ?? 30_000,
      checkIntervalMs: opts.checkIntervalMs ?? 15_000,
      onRefresh: opts.onRefresh,
    };
  }

  /** Loads the keys once (not awaited by callers that can serve without them) and keeps them fresh. */
  start(): Promise<boolean> {
    this.timer ??= setInterval(() => void this.refreshIfDue(), this.o.checkIntervalMs);
    this.timer.unref();
    return this.refresh('initial');
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  hasKeys(): boolean {
    return this.usableKeys().size > 0;
  }

  /**
   * A kid held now is answered synchronously (the hot path: no promise); an unknown one may
   * wait for a refetch, so it gets a promise.
   */
  getKey(kid: string): KeyLookup | Promise<KeyLookup> {
    const known = this.usableKeys().get(kid);
    if (known) {
      if (this.now() >= this.nextRefreshAt) void this.refreshIfDue();
      return known.found;
    }
    return this.getUnknownKey(kid);
  }

  private async getUnknownKey(kid: string): Promise<KeyLookup> {
    if (this.inflight) {
      // A refresh is already on its way: waiting for it costs the endpoint nothing.
      await this.inflight;
    } else if (this.now() - this.lastUnknownKidFetchAt >= this.o.unknownKidIntervalMs) {
      this.lastUnknownKidFetchAt = this.now();
      await this.refresh('unknown_kid');
    }
    const keys = this.usableKeys();
    const found = keys.get(kid);
    if (found) return found.found;
    return keys.size > 0 ? { status: 'unknown' } : { status: 'unavailable' };
  }

  /** Refreshes when the keys are close to expiry or the last attempt failed long enough ago. */
  async refreshIfDue(): Promise<void> {
    if (this.inflight) {
      await this.inflight;
      return;
    }
    if (this.now() >= this.nextRefreshAt) await this.refresh('scheduled');
  }

  /** Fetches the keys now (one fetch at a time); true when new keys were installed. */
  refresh(trigger: RefreshTrigger): Promise<boolean> {
    this.inflight ??= this.fetchAndInstall(trigger).finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  status(): KeyStoreStatus {
    const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
    const keys = this.usableKeys();
    return {
      keyCount: keys.size,
      kids: [...keys.keys()],
      lastRefreshOk: this.last?.ok,
      lastAttemptAt: iso(this.last?.at),
      lastSuccessAt: iso(this.lastSuccessAt),
      expiresAt: iso(this.expiresAt),
      lastError: this.last?.error,
    };
  }

  private async fetchAndInstall(trigger: RefreshTrigger): Promise<boolean> {
    const started = this.now();
    let ok: boolean;
    let error: string | undefined;
    try {
      const { keys, maxAgeMs } = await this.download();
      const now = this.now();
      this.keys = keys;
      this.expiresAt = now + maxAgeMs;
      this.nextRefreshAt = now + Math.max(maxAgeMs - this.o.refreshAheadMs, maxAgeMs / 2);
      this.lastSuccessAt = now;
      ok = true;
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      this.nextRefreshAt = this.now() + this.o.retryAfterFailureMs;
      ok = false;
    }
    const finished = this.now();
    this.last = { ok, at: finished, ...(error !== undefined ? { error } : {}) };
    try {
      this.o.onRefresh?.({
        ok,
        trigger,
        keyCount: this.usableKeys().size,
        durationMs: finished - started,
        ...(error !== undefined ? { error } : {}),
      });
    } catch {
      // An observer's failure must not turn a background refresh into an unhandled rejection.
    }
    return ok;
  }

  /** The keys, unless every refresh has failed for longer than the grace period past their expiry. */
  private usableKeys(): Map<string, HeldKey> {
    if (this.keys.size > 0 && this.expiresAt !== undefined && this.now() > this.expiresAt + this.o.maxStaleMs) {
      this.keys = new Map();
    }
    return this.keys;
  }

  /** One GET of the endpoint; throws with a short explanation on anything unexpected. */
  private async download(): Promise<{ keys: Map<string, HeldKey>; maxAgeMs: number }> {
    const response = await this.fetch(this.o.url, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(this.o.fetchTimeoutMs),
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`key endpoint answered HTTP ${response.status}`);
    }
    const text = await readAtMost(response, MAX_BODY_BYTES);

    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error('key endpoint response is not JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new Error('key endpoint response is not a JSON object');
    }
    const entries = Object.entries(body);
    if (entries.length === 0) throw new Error('key endpoint returned no keys');

    // All or nothing: a response we only half understand is not one to trust.
    const keys = new Map<string, HeldKey>();
    for (const [kid, pem] of entries) {
      if (typeof pem !== 'string') throw new Error(`key ${kid} is not a PEM string`);
      // An unchanged certificate keeps its imported key: no second import, and tokens
      // already verified with it stay in the verified-token cache.
      const known = this.keys.get(kid);
      if (known?.pem === pem) {
        keys.set(kid, known);
        continue;
      }
      try {
        keys.set(kid, { pem, found: Object.freeze({ status: 'found', key: importCertificateKey(pem) }) });
      } catch (err) {
        throw new Error(`key ${kid} is not a usable RS256 certificate: ${(err as Error).message}`);
      }
    }
    return { keys, maxAgeMs: this.lifetime(response.headers.get('cache-control')) };
  }

  private lifetime(cacheControl: string | null): number {
    const match = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)/i.exec(cacheControl ?? '');
    const ms = match ? Number(match[1]) * 1000 : this.o.defaultMaxAgeMs;
    return Math.min(Math.max(ms, this.o.minMaxAgeMs), this.o.maxMaxAgeMs);
  }
}

/** The body as text, refusing it (without reading further) once it passes `limit` bytes. */
async function readAtMost(response: Response, limit: number): Promise<string> {
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Leaving the loop by throwing cancels the stream, which closes the connection.
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > limit) throw new Error('key endpoint response is too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
