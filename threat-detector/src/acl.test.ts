import { waitUntil } from '@sekisho/devstack/processes';
import { type SecureRedisHandle, startSecureRedis } from '@sekisho/devstack/redis';
import { createLogger } from '@sekisho/service-kit/logger';
import { threatBlockSchema, threatKeys } from '@sekisho/service-kit/threat-contract';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startThreatDetectorApp, type ThreatDetectorApp } from './app';
import { loadThreatDetectorConfig } from './config';
import { entry } from './test-entries';

// The least the detector's ACL user needs (what the README lists), against a real redis-server
// whose default user is off: every rule writes its block, the geo anomaly rule records places,
// reads trusted devices and lifts its state, and no flush fails.

/**
 * The README's list: ioredis' ready check (INFO; without it ioredis warns and skips the check),
 * the scripts (EVALSHA, EVAL when a server does not know one yet) and what they call, the
 * places' MULTI and the trusted devices. Every one but INFO is needed: without it this test fails.
 */
const detectorAclCommands =
  '-@all +info +evalsha +eval +hincrby +hgetall +hdel +pexpire +zscore +zadd +hset +publish +get +set +lrange +zrem +multi +exec +lpush +ltrim +smembers';
const prefix = 'sekisho:threats';

let server: SecureRedisHandle;
let admin: Redis;
let app: ThreatDetectorApp;
const clock = { now: 1_700_000_000_000 };

beforeAll(async () => {
  server = await startSecureRedis({
    users: [
      {
        name: 'detector',
        password: 'detector-acl-s3cret',
        keys: `~${prefix}:*`,
        commands: detectorAclCommands.split(' '),
      },
      { name: 'admin', password: 'admin-acl-s3cret' },
    ],
  });
  admin = new Redis(server.url.replace('redis://', 'redis://admin:admin-acl-s3cret@'), { maxRetriesPerRequest: 1 });
  const config = loadThreatDetectorConfig({
    THREAT_GRPC_PORT: '0',
    THREAT_ADMIN_PORT: '0',
    THREAT_REDIS_URL: server.url,
    THREAT_REDIS_USERNAME: 'detector',
    THREAT_REDIS_PASSWORD: 'detector-acl-s3cret',
    // Flushed by the test itself.
    THREAT_FLUSH_INTERVAL: '10s',
  });
  app = await startThreatDetectorApp(config, {
    logger: createLogger('threat-detector', { level: 'silent' }),
    now: () => clock.now,
  });
  await waitUntil('the detector to reach Redis', 10_000, {}, async () =>
    app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: app.status().redis },
  );
}, 60_000);

afterAll(async () => {
  await app?.close();
  admin?.disconnect();
  await server?.stop();
});

async function metric(name: string, labels: Record<string, string> = {}) {
  const found = (await app.registry.getSingleMetric(name)?.get())?.values ?? [];
  return found
    .filter((value) => Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted))
    .reduce((sum, value) => sum + value.value, 0);
}

async function send(...entries: ReturnType<typeof entry>[]) {
  for (const one of entries) app.detector.ingest(one);
  await app.detector.flush();
}

const blocks = async () =>
  Object.values(await admin.hgetall(threatKeys(prefix).records))
    .map((text) => threatBlockSchema.parse(JSON.parse(text)))
    .map((block) => `${block.kind}:${block.subject}`)
    .sort();

it('counts, blocks, records places and lifts a state with only the listed commands', async () => {
  const tokyo = { latitude: 35.6895, longitude: 139.6917 };
  const london = { latitude: 51.5072, longitude: -0.1276 };
  await admin.sadd(threatKeys(prefix).devices('traveller'), 'a'.repeat(64));
  // Brute force (counters, then a block), data exfiltration (a user block), a first sign-in (a place).
  await send(
    ...Array.from({ length: 6 }, () => entry({ ip: '198.51.100.40', status: 401, route: 'sign-in' })),
    entry({ user: 'hoarder', bytes: 101 * 1024 * 1024 }),
    entry({ user: 'traveller', authTimeS: 1_000, place: tokyo }),
  );
  // A far sign-in: the trusted devices read, the auth state written.
  clock.now += 60_000;
  await send(entry({ user: 'traveller', authTimeS: 2_000, place: london }));
  expect(await blocks()).toEqual(['auth:traveller', 'ip:198.51.100.40', 'user:hoarder']);
  // A second factor lifts it.
  clock.now += 60_000;
  await send(entry({ user: 'traveller', authTimeS: 2_100, place: london, secondFactor: 'phone' }));
  expect(await blocks()).toEqual(['ip:198.51.100.40', 'user:hoarder']);
  expect(await admin.llen(threatKeys(prefix).locations('traveller'))).toBe(2);

  expect(await metric('sekisho_threat_flushes_total', { result: 'error' })).toBe(0);
  expect(await metric('sekisho_threat_flushes_total', { result: 'ok' })).toBe(3);
  expect(await metric('sekisho_threat_detection_paused')).toBe(0);
  expect(await metric('sekisho_threat_sign_ins_total', { result: 'second_factor' })).toBe(1);
});
