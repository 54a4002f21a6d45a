// The geo anomaly rule end to end inside the detector, against a real redis-server and a real
// MaxMind test database, with the detector's clock under the test's control: the first
// sign-in sets the usual place, a sign-in more than 1,000 km from it puts the user under
// additional authentication, a refreshed token is no sign-in, a second factor lifts the state.
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import { deviceHash, threatBlockSchema, threatKeys } from '@sekisho/service-kit/threat-contract';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startThreatDetectorApp, type ThreatDetectorApp } from './app';
import { configSchema } from './config';
import { openGeoIpDatabase } from './geoip';
import { entry } from './test-entries';

const geoipTestDatabase = fileURLToPath(new URL('../testdata/GeoLite2-City-Test.mmdb', import.meta.url));
const quiet = createLogger('threat-detector', { level: 'silent' });
let redis: RedisHandle;
let reader: Redis;
const apps: ThreatDetectorApp[] = [];

beforeAll(async () => {
  redis = await startRedis();
  reader = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  reader.on('error', () => {});
});
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});
afterAll(async () => {
  reader?.disconnect();
  await redis?.stop();
});

async function startApp(prefix: string, clock: { now: number }, env: Record<string, string> = {}) {
  const config = configSchema.parse({
    THREAT_GRPC_PORT: '0',
    THREAT_ADMIN_PORT: '0',
    THREAT_REDIS_URL: redis.url,
    THREAT_REDIS_KEY_PREFIX: prefix,
    THREAT_FLUSH_INTERVAL: '10s',
    ...env,
  });
  const app = await startThreatDetectorApp(config, { logger: quiet, now: () => clock.now });
  apps.push(app);
  await waitUntil('the detector to reach Redis', 10_000, {}, async () =>
    app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: app.status().redis },
  );
  return app;
}

async function metric(app: ThreatDetectorApp, name: string, labels: Record<string, string> = {}) {
  const found = (await app.registry.getSingleMetric(name)?.get())?.values ?? [];
  return found
    .filter((value) => Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted))
    .reduce((sum, value) => sum + value.value, 0);
}

async function blocks(prefix: string) {
  const records = await reader.hgetall(threatKeys(prefix).records);
  return Object.values(records).map((text) => threatBlockSchema.parse(JSON.parse(text)));
}

const tokyo = { latitude: 35.6895, longitude: 139.6917 };
const degreesPerKm = 180 / (Math.PI * 6371.0088);
const north = (km: number) => ({ latitude: tokyo.latitude + km * degreesPerKm, longitude: tokyo.longitude });
const start = 1_700_000_000_000;

/** One request of `user` with a token signed in at `authTimeS`, from `place` (the CDN's headers). */
const signIn = (
  user: string,
  authTimeS: number,
  place?: { latitude: number; longitude: number },
  secondFactor?: string,
) => entry({ user, authTimeS, ...(place ? { place } : {}), ...(secondFactor ? { secondFactor } : {}) });

async function send(app: ThreatDetectorApp, ...entries: ReturnType<typeof entry>[]) {
  for (const one of entries) app.detector.ingest(one);
  await app.detector.flush();
}

describe('geo anomaly in the detector', () => {
  it('makes the first sign-in the usual place and triggers nothing; 999 km later is usual, 1,001 km is far', async () => {
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const app = await startApp(keys, clock);
    await send(app, signIn('u-1', 1_000, tokyo));
    expect(await blocks(keys)).toEqual([]);
    expect(await metric(app, 'sekisho_threat_sign_ins_total', { result: 'first' })).toBe(1);

    clock.now += 60_000;
    await send(app, signIn('u-1', 2_000, north(999)));
    expect(await blocks(keys)).toEqual([]);
    expect(await metric(app, 'sekisho_threat_sign_ins_total', { result: 'usual' })).toBe(1);

    // 1,001 km from Tokyo is 2 km from the last one: the nearest usual place decides.
    clock.now += 60_000;
    await send(app, signIn('u-1', 3_000, north(1_001)));
    expect(await blocks(keys)).toEqual([]);

    const far = { latitude: tokyo.latitude - 1_001 * degreesPerKm, longitude: tokyo.longitude };
    clock.now += 60_000;
    await send(app, signIn('u-1', 4_000, far));
    expect(await blocks(keys)).toEqual([
      {
        kind: 'auth',
        subject: 'u-1',
        rule: 'geo_anomaly',
        severity: 'medium',
        untilMs: clock.now + 3_600_000,
        authTimeS: 4_000,
        devices: [],
      },
    ]);
    expect(await metric(app, 'security_events', { rule: 'geo_anomaly', severity: 'medium' })).toBe(1);
    // The far place is not made usual: a later sign-in there is far again.
    expect(await reader.llen(threatKeys(keys).locations('u-1'))).toBe(3);
  });

  it('judges a token once: the same auth_time again (a refreshed token, another receiver) is no sign-in', async () => {
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const [a, b] = [await startApp(keys, clock), await startApp(keys, clock)];
    await send(a, signIn('u-2', 1_000, tokyo));
    await send(b, signIn('u-2', 1_000, north(5_000)));
    await send(a, signIn('u-2', 900, north(5_000)));
    expect(await blocks(keys)).toEqual([]);
    expect(
      (await metric(a, 'sekisho_threat_sign_ins_total')) + (await metric(b, 'sekisho_threat_sign_ins_total')),
    ).toBe(1);
  });

  it('lifts the state at a sign-in with a second factor and makes its place usual', async () => {
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const app = await startApp(keys, clock);
    await send(app, signIn('u-3', 1_000, tokyo));
    await send(app, signIn('u-3', 2_000, north(5_000)));
    expect((await blocks(keys)).map((block) => block.kind)).toEqual(['auth']);
    const changes: string[] = [];
    const subscriber = new Redis(redis.url);
    await subscriber.subscribe(threatKeys(keys).channel);
    subscriber.on('message', (_channel, text) => changes.push(text));
    try {
      await send(app, signIn('u-3', 2_100, north(5_000), 'phone'));
      expect(await blocks(keys)).toEqual([]);
      await waitUntil('the lift on the channel', 5_000, {}, async () =>
        changes.length > 0 ? { done: true, value: undefined } : { done: false, detail: 'none yet' },
      );
      expect(JSON.parse(changes[0] ?? '{}')).toEqual({ op: 'unblock', member: 'auth:u-3' });
    } finally {
      subscriber.disconnect();
    }
    // The place shown with a second factor is usual now.
    await send(app, signIn('u-3', 2_200, north(5_010)));
    expect(await blocks(keys)).toEqual([]);
  });

  it('lifts the state at a second-factor sign-in from a place it cannot locate, remembering no place', async () => {
    const keys = `test:${randomUUID()}`;
    const app = await startApp(keys, { now: start });
    await send(app, signIn('u-10', 1_000, tokyo));
    await send(app, signIn('u-10', 2_000, north(5_000)));
    expect(await blocks(keys)).toHaveLength(1);
    await send(app, signIn('u-10', 2_100, undefined, 'totp'));
    expect(await blocks(keys)).toEqual([]);
    expect(await reader.llen(threatKeys(keys).locations('u-10'))).toBe(1);
  });

  it("copies the user's trusted devices into the state", async () => {
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const app = await startApp(keys, clock);
    await reader.sadd(threatKeys(keys).devices('u-4'), deviceHash('phone-of-u-4'));
    await send(app, signIn('u-4', 1_000, tokyo), signIn('u-5', 1_000, tokyo));
    await send(app, signIn('u-4', 2_000, north(3_000)));
    expect(await blocks(keys)).toMatchObject([{ subject: 'u-4', devices: [deviceHash('phone-of-u-4')] }]);
  });

  it('forgets usual places after rememberFor: a far sign-in then is a first one', async () => {
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const app = await startApp(keys, clock);
    await send(app, signIn('u-6', 1_000, tokyo));
    clock.now += 90 * 86_400_000;
    await send(app, signIn('u-6', 2_000, north(5_000)));
    expect(await blocks(keys)).toEqual([]);
    expect(await metric(app, 'sekisho_threat_sign_ins_total', { result: 'first' })).toBe(2);
  });

  it('leaves a sign-in with no place unjudged (no headers, no GeoIP database)', async () => {
    const keys = `test:${randomUUID()}`;
    const app = await startApp(keys, { now: start });
    await send(app, signIn('u-7', 1_000));
    expect(await metric(app, 'sekisho_threat_sign_ins_total', { result: 'unlocated' })).toBe(1);
    expect(await reader.exists(threatKeys(keys).locations('u-7'))).toBe(0);
  });

  it("places a sign-in by the client address with MaxMind's test City database", async () => {
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const app = await startApp(keys, clock, { THREAT_GEOIP_DATABASE: geoipTestDatabase });
    expect(app.status().geoip).toMatchObject({ type: 'GeoLite2-City' });
    const at = (ip: string, authTimeS: number) => entry({ user: 'u-8', authTimeS, ip });
    await send(app, at('81.2.69.142', 1_000)); // London
    await send(app, at('2.125.160.216', 2_000)); // Boxford, about 90 km away
    expect(await blocks(keys)).toEqual([]);
    await send(app, at('89.160.20.112', 3_000)); // Linköping, about 1,400 km away
    expect(await blocks(keys)).toMatchObject([{ kind: 'auth', subject: 'u-8', authTimeS: 3_000 }]);
  });
});

describe('geo anomaly with Redis down', () => {
  it('keeps the sign-in waiting, pauses detection, refuses nobody, and judges it once Redis is back', async () => {
    if (!redis.control) throw new Error('this test needs a spawned redis-server (unset REDIS_URL)');
    const keys = `test:${randomUUID()}`;
    const clock = { now: start };
    const app = await startApp(keys, clock);
    await send(app, signIn('u-9', 1_000, tokyo));
    await redis.control.down();
    try {
      await send(app, signIn('u-9', 2_000, north(5_000)));
      expect(await metric(app, 'sekisho_threat_detection_paused')).toBe(1);
      // The calls count and the sign-in both wait.
      expect(app.detector.pendingKeys).toBe(2);
    } finally {
      await redis.control.up();
    }
    await waitUntil('the detector to flush again', 10_000, {}, async () => {
      await app.detector.flush();
      return (await metric(app, 'sekisho_threat_detection_paused')) === 0
        ? { done: true, value: undefined }
        : { done: false, detail: 'still paused' };
    });
    // The test's redis-server restarts empty: the waiting sign-in is judged as a first one.
    expect(await metric(app, 'sekisho_threat_sign_ins_total', { result: 'first' })).toBe(2);
    expect(await blocks(keys)).toEqual([]);
    expect(app.detector.pendingKeys).toBe(0);
  });
});

describe('openGeoIpDatabase', () => {
  it('reads coordinates of a known address and nothing for one outside the database', async () => {
    const database = await openGeoIpDatabase(geoipTestDatabase);
    expect(database.lookup('81.2.69.142')).toEqual({ latitude: 51.5142, longitude: -0.0931, source: 'geoip' });
    expect(database.lookup('10.0.0.1')).toBeUndefined();
    expect(database.lookup('not-an-ip')).toBeUndefined();
  });
});
