import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createFirebaseKeyServer,
  type FirebaseKeyServer,
  generateSigningKey,
  type SigningKey,
} from '@sekisho/devstack/firebase-keys';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FirebaseKeyStore, type KeyStoreOptions, type RefreshEvent } from './key-store';

// The key store against real HTTP servers on 127.0.0.1: devstack's Firebase key server
// (Google's x509 format, real certificates) and small servers that misbehave on purpose.
// Time is driven by an injected clock; HTTP is real.

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function keyServer(maxAgeSeconds = 3600): Promise<FirebaseKeyServer> {
  const server = await createFirebaseKeyServer({ maxAgeSeconds });
  cleanups.push(() => server.close());
  return server;
}

/** A local HTTP server answering every request with `handler`. */
async function serve(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`, hits: () => hits };
}

let cachedKey: SigningKey | undefined;
beforeAll(async () => {
  cachedKey = await generateSigningKey();
});
/** One real certificate for the servers that misbehave on purpose. */
async function sharedKey(): Promise<SigningKey> {
  cachedKey ??= await generateSigningKey();
  return cachedKey;
}

function clock(start = Date.parse('2030-01-01T00:00:00Z')) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

function store(url: string, time: ReturnType<typeof clock>, opts: Partial<KeyStoreOptions> = {}) {
  const events: RefreshEvent[] = [];
  const keys = new FirebaseKeyStore({
    url,
    now: time.now,
    refreshAheadMs: 300_000,
    unknownKidIntervalMs: 30_000,
    retryAfterFailureMs: 10_000,
    onRefresh: (event) => events.push(event),
    ...opts,
  });
  cleanups.push(async () => keys.close());
  return { keys, events };
}

async function until(probe: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('FirebaseKeyStore', () => {
  it('loads every certificate of the x509 endpoint as an RS256 key', async () => {
    const google = await keyServer();
    await google.rotate();
    const time = clock();
    const { keys, events } = store(google.url, time);

    expect(await keys.refresh('initial')).toBe(true);
    expect(keys.status()).toMatchObject({ keyCount: 2, lastRefreshOk: true, kids: google.keys.map((k) => k.kid) });
    const lookup = await keys.getKey(google.signingKey.kid);
    expect(lookup.status).toBe('found');
    expect(lookup.status === 'found' && lookup.key.asymmetricKeyType).toBe('rsa');
    expect(events).toMatchObject([{ ok: true, trigger: 'initial', keyCount: 2 }]);
  });

  it('keeps the keys for the max-age of Cache-Control and refreshes ahead of expiry in the background', async () => {
    const google = await keyServer(3600);
    const time = clock();
    const { keys, events } = store(google.url, time);
    await keys.refresh('initial');
    const kid = google.signingKey.kid;
    expect(keys.status().expiresAt).toBe(new Date(time.now() + 3_600_000).toISOString());

    time.advance(3600_000 - 300_000 - 1);
    await keys.getKey(kid);
    await keys.refreshIfDue();
    expect(google.requests()).toBe(1);

    time.advance(1);
    // Served from the cache at once; the refresh runs behind it.
    expect((await keys.getKey(kid)).status).toBe('found');
    await until(() => events.length === 2);
    expect(google.requests()).toBe(2);
    expect(events[1]).toMatchObject({ ok: true, trigger: 'scheduled' });
  });

  it.each([
    { cacheControl: 'public, max-age=0', expectedMs: 60_000 },
    { cacheControl: 'public, max-age=999999999', expectedMs: 86_400_000 },
    { cacheControl: 'no-cache', expectedMs: 3_600_000 },
    { cacheControl: undefined, expectedMs: 3_600_000 },
    { cacheControl: 'public, max-age="120", must-revalidate', expectedMs: 120_000 },
    { cacheControl: 'public, s-maxage=10, max-age=7200', expectedMs: 7_200_000 },
  ])('derives the lifetime from Cache-Control $cacheControl', async ({ cacheControl, expectedMs }) => {
    const key = await sharedKey();
    const endpoint = await serve((_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        ...(cacheControl ? { 'cache-control': cacheControl } : {}),
      });
      res.end(JSON.stringify({ [key.kid]: key.certificatePem }));
    });
    const time = clock();
    const { keys } = store(endpoint.url, time);
    expect(await keys.refresh('initial')).toBe(true);
    expect(keys.status().expiresAt).toBe(new Date(time.now() + expectedMs).toISOString());
  });

  describe('unknown kids', () => {
    it('refetches once for a kid that appeared after the last fetch (a key rotation)', async () => {
      const google = await keyServer();
      const time = clock();
      const { keys, events } = store(google.url, time);
      await keys.refresh('initial');
      const rotated = await google.rotate();

      expect((await keys.getKey(rotated.kid)).status).toBe('found');
      expect(google.requests()).toBe(2);
      expect(events.at(-1)).toMatchObject({ ok: true, trigger: 'unknown_kid', keyCount: 2 });
    });

    it('refetches at most once per interval however many garbage kids arrive', async () => {
      const google = await keyServer();
      const time = clock();
      const { keys } = store(google.url, time);
      await keys.refresh('initial');

      expect(await keys.getKey('garbage-0')).toEqual({ status: 'unknown' });
      expect(google.requests()).toBe(2);
      for (let i = 1; i <= 100; i++) {
        time.advance(100);
        expect(await keys.getKey(`garbage-${i}`)).toEqual({ status: 'unknown' });
      }
      expect(google.requests()).toBe(2);

      time.advance(30_000);
      await keys.getKey('garbage-after-interval');
      expect(google.requests()).toBe(3);
    });

    it('shares one fetch between concurrent lookups', async () => {
      const google = await keyServer();
      const { keys } = store(google.url, clock());
      const lookups = await Promise.all(Array.from({ length: 20 }, (_, i) => keys.getKey(`kid-${i}`)));
      expect(lookups.every((lookup) => lookup.status === 'unknown')).toBe(true);
      expect(google.requests()).toBe(1);
    });

    it('keeps the imported key of a certificate that did not change', async () => {
      const google = await keyServer();
      const { keys } = store(google.url, clock());
      const keyOf = async (kid: string) => {
        const lookup = await keys.getKey(kid);
        if (lookup.status !== 'found') throw new Error(`kid ${kid}: ${lookup.status}`);
        return lookup.key;
      };
      await keys.refresh('initial');
      const first = google.signingKey.kid;
      const before = await keyOf(first);
      await google.rotate();
      await keys.refresh('scheduled');
      // The same object, not merely an equal one: tokens verified with it stay cached.
      expect(await keyOf(first)).toBe(before);
      expect(await keyOf(google.signingKey.kid)).not.toBe(before);
    });

    it('drops a key the endpoint stopped publishing', async () => {
      const google = await keyServer();
      const old = google.signingKey;
      await google.rotate();
      const { keys } = store(google.url, clock());
      await keys.refresh('initial');
      google.retire(old.kid);
      await keys.refresh('scheduled');
      expect(await keys.getKey(old.kid)).toEqual({ status: 'unknown' });
    });
  });

  describe('failures', () => {
    it('keeps serving the old keys when a refresh fails, and retries after the back-off', async () => {
      const google = await keyServer();
      const time = clock();
      const { keys, events } = store(google.url, time);
      await keys.refresh('initial');
      const kid = google.signingKey.kid;

      google.setOutage(503);
      expect(await keys.refresh('scheduled')).toBe(false);
      expect((await keys.getKey(kid)).status).toBe('found');
      expect(keys.status()).toMatchObject({
        keyCount: 1,
        lastRefreshOk: false,
        lastError: expect.stringContaining('503'),
      });
      expect(events.at(-1)).toMatchObject({ ok: false, keyCount: 1 });

      time.advance(9_999);
      await keys.refreshIfDue();
      expect(google.requests()).toBe(2);

      google.setOutage(null);
      time.advance(1);
      await keys.refreshIfDue();
      expect(google.requests()).toBe(3);
      expect(keys.status().lastRefreshOk).toBe(true);
    });

    it('stops trusting the old keys once refreshes have failed for the grace period past their expiry', async () => {
      const google = await keyServer(3600);
      const time = clock();
      const { keys, events } = store(google.url, time, { maxStaleMs: 600_000 });
      await keys.refresh('initial');
      const kid = google.signingKey.kid;
      google.setOutage(503);

      time.advance(3_600_000 + 600_000);
      expect((await keys.getKey(kid)).status).toBe('found');
      expect(keys.hasKeys()).toBe(true);

      time.advance(1);
      expect(keys.hasKeys()).toBe(false);
      expect(await keys.getKey(kid)).toEqual({ status: 'unavailable' });
      expect(events.at(-1)).toMatchObject({ ok: false, keyCount: 0 });

      google.setOutage(null);
      time.advance(30_000);
      expect((await keys.getKey(kid)).status).toBe('found');
    });

    it('reports keys as unavailable (not unknown) when none were ever loaded', async () => {
      const google = await keyServer();
      google.setOutage(500);
      const { keys } = store(google.url, clock());
      expect(await keys.start()).toBe(false);
      expect(await keys.getKey(google.signingKey.kid)).toEqual({ status: 'unavailable' });
      expect(keys.hasKeys()).toBe(false);
    });

    it('gives up on an endpoint that does not answer within the timeout', async () => {
      const silent = await serve(() => {
        // Never answers.
      });
      const { keys } = store(silent.url, clock(), { fetchTimeoutMs: 200 });
      const started = Date.now();
      expect(await keys.refresh('initial')).toBe(false);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(keys.status().lastError).toMatch(/timeout|abort/i);
    });

    it('fails cleanly when nothing listens on the port', async () => {
      const gone = await serve(() => {});
      const url = gone.url;
      await cleanups.pop()?.();
      const { keys } = store(url, clock());
      expect(await keys.refresh('initial')).toBe(false);
      expect(keys.status().lastRefreshOk).toBe(false);
    });

    it.each([
      { name: 'an HTTP 500', status: 500, body: '{}', error: /HTTP 500/ },
      { name: 'a body that is not JSON', status: 200, body: '<html>', error: /not JSON/ },
      { name: 'a JSON array', status: 200, body: '[]', error: /not a JSON object/ },
      { name: 'an empty object', status: 200, body: '{}', error: /no keys/ },
      { name: 'a key that is not a string', status: 200, body: '{"k1": 42}', error: /k1 is not a PEM string/ },
      {
        name: 'a PEM that is not a certificate',
        status: 200,
        body: '{"k1": "-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n"}',
        error: /k1 is not a usable/,
      },
    ])('rejects $name and keeps the old keys', async ({ status, body, error }) => {
      const key = await sharedKey();
      let broken = false;
      const endpoint = await serve((_req, res) => {
        if (broken) res.writeHead(status, { 'content-type': 'application/json' }).end(body);
        else res.writeHead(200).end(JSON.stringify({ [key.kid]: key.certificatePem }));
      });
      const { keys } = store(endpoint.url, clock());
      await keys.refresh('initial');
      broken = true;
      expect(await keys.refresh('scheduled')).toBe(false);
      expect(keys.status().lastError).toMatch(error);
      expect((await keys.getKey(key.kid)).status).toBe('found');
    });

    it('refuses a response larger than a megabyte without reading all of it', async () => {
      const endpoint = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(`{"k1": "${'A'.repeat(1 << 20)}`);
        // Never ends: the store must stop reading on its own.
      });
      const { keys } = store(endpoint.url, clock(), { fetchTimeoutMs: 10_000 });
      expect(await keys.refresh('initial')).toBe(false);
      expect(keys.status().lastError).toMatch(/too large/);
    });

    it('does not take a half-valid response: one bad certificate rejects the whole set', async () => {
      const key = await sharedKey();
      const endpoint = await serve((_req, res) => {
        res.writeHead(200).end(JSON.stringify({ [key.kid]: key.certificatePem, bad: 'not a pem' }));
      });
      const { keys } = store(endpoint.url, clock());
      expect(await keys.refresh('initial')).toBe(false);
      expect(keys.hasKeys()).toBe(false);
    });

    it('survives an onRefresh observer that throws', async () => {
      const google = await keyServer();
      const { keys } = store(google.url, clock(), {
        onRefresh: () => {
          throw new Error('observer failed');
        },
      });
      expect(await keys.refresh('initial')).toBe(true);
    });
  });

  it('uses the injected fetch', async () => {
    const key = await sharedKey();
    const urls: string[] = [];
    const { keys } = store('https://keys.invalid/x509', clock(), {
      fetch: async (url) => {
        urls.push(url);
        return new Response(JSON.stringify({ [key.kid]: key.certificatePem }), {
          headers: { 'cache-control': 'max-age=600' },
        });
      },
    });
    expect(await keys.refresh('initial')).toBe(true);
    expect(urls).toEqual(['https://keys.invalid/x509']);
  });
});
