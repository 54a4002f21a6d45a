import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { credentials } from '@grpc/grpc-js';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import type { HTTPAccessLogEntry } from '@sekisho/proto/envoy/data/accesslog/v3/accesslog';
import { AccessLogServiceClient, StreamAccessLogsMessage } from '@sekisho/proto/envoy/service/accesslog/v3/als';
import { createLogger } from '@sekisho/service-kit/logger';
import { threatBlockSchema, threatKeys } from '@sekisho/service-kit/threat-contract';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startThreatDetectorApp, type ThreatDetectorApp } from './app';
import { configSchema } from './config';
import { entry, referenceRules } from './test-entries';

// The receiver against real gRPC streams (Envoy's client-streaming StreamAccessLogs) and a
// real redis-server, with the detector's clock under the test's control.

let redis: RedisHandle;
let reader: Redis;
const apps: ThreatDetectorApp[] = [];
const clients: AccessLogServiceClient[] = [];

beforeAll(async () => {
  redis = await startRedis();
  reader = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  reader.on('error', () => {});
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const app of apps.splice(0)) await app.close();
});

afterAll(async () => {
  reader?.disconnect();
  await redis?.stop();
});

const quiet = createLogger('threat-detector', { level: 'silent' });

async function startApp(prefix: string, clock: { now: number }, env: Record<string, string> = {}) {
  const config = configSchema.parse({
    THREAT_GRPC_PORT: '0',
    THREAT_ADMIN_PORT: '0',
    THREAT_REDIS_URL: redis.url,
    THREAT_REDIS_KEY_PREFIX: prefix,
    // Flushed by the tests themselves, so what a flush holds is known.
    THREAT_FLUSH_INTERVAL: '10s',
    ...env,
  });
  const app = await startThreatDetectorApp(config, { logger: quiet, now: () => clock.now });
  apps.push(app);
  // Facts taken before Redis answers wait in the buffer; the tests want to flush at once.
  await waitUntil('the detector to reach Redis', 10_000, {}, async () =>
    app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: app.status().redis },
  );
  return app;
}

/** Streams the entries as Envoy does (batches on one client stream) and ends the stream. */
async function stream(app: ThreatDetectorApp, entries: HTTPAccessLogEntry[], batch = 100) {
  const client = new AccessLogServiceClient(`127.0.0.1:${app.grpcPort}`, credentials.createInsecure());
  clients.push(client);
  await new Promise<void>((resolve, reject) => {
    const call = client.streamAccessLogs((error) => (error ? reject(error) : resolve()));
    call.write(
      StreamAccessLogsMessage.fromPartial({ identifier: { node: { id: 'ingress' }, logName: 'sekisho_threat' } }),
    );
    for (let i = 0; i < entries.length; i += batch)
      call.write(StreamAccessLogsMessage.fromPartial({ httpLogs: { logEntry: entries.slice(i, i + batch) } }));
    call.end();
  });
}

async function metric(app: ThreatDetectorApp, name: string, labels: Record<string, string> = {}) {
  const found = (await app.registry.getSingleMetric(name)?.get())?.values ?? [];
  return found
    .filter((value) => Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted))
    .reduce((sum, value) => sum + value.value, 0);
}

const entriesSeen = (app: ThreatDetectorApp, count: number) =>
  waitUntil(`${count} entries received`, 10_000, {}, async () => {
    const seen = await metric(app, 'sekisho_threat_log_entries_total');
    return seen >= count ? { done: true, value: undefined } : { done: false, detail: `${seen} so far` };
  });

async function blocks(prefix: string) {
  const records = await reader.hgetall(threatKeys(prefix).records);
  return Object.values(records).map((text) => threatBlockSchema.parse(JSON.parse(text)));
}

const prefix = () => `test:${randomUUID()}`;
const failedLogin = (ip: string) => entry({ ip, status: 401, route: 'sign-in' });

describe('brute force through the receiver', () => {
  it('blocks the IP for an hour at the sixth failed login, not the fifth', async () => {
    const keys = prefix();
    const clock = { now: 1_700_000_000_000 };
    const app = await startApp(keys, clock);
    await stream(
      app,
      Array.from({ length: 5 }, () => failedLogin('198.51.100.1')),
    );
    await entriesSeen(app, 5);
    await app.detector.flush();
    expect(await blocks(keys)).toEqual([]);

    await stream(app, [failedLogin('198.51.100.1'), failedLogin('198.51.100.2')]);
    await entriesSeen(app, 7);
    await app.detector.flush();
    expect(await blocks(keys)).toEqual([
      { kind: 'ip', subject: '198.51.100.1', rule: 'brute_force', severity: 'high', untilMs: clock.now + 3_600_000 },
    ]);
    expect(await metric(app, 'security_events', { rule: 'brute_force', severity: 'high' })).toBe(1);
    expect(await metric(app, 'blocked_ips')).toBe(1);
    expect(await metric(app, 'failed_login_attempts', { kind: 'login' })).toBe(7);
  });

  it('forgets failures older than the 15-minute window', async () => {
    const keys = prefix();
    const clock = { now: 1_700_000_000_000 };
    const app = await startApp(keys, clock);
    await stream(
      app,
      Array.from({ length: 5 }, () => failedLogin('198.51.100.3')),
    );
    await entriesSeen(app, 5);
    await app.detector.flush();
    clock.now += 16 * 60_000;
    await stream(app, [failedLogin('198.51.100.3')]);
    await entriesSeen(app, 6);
    await app.detector.flush();
    expect(await blocks(keys)).toEqual([]);
  });

  it('two receivers share the count: three failures each make one block', async () => {
    const keys = prefix();
    const clock = { now: 1_700_000_000_000 };
    const [a, b] = [await startApp(keys, clock), await startApp(keys, clock)] as const;
    await Promise.all([
      stream(
        a,
        Array.from({ length: 3 }, () => failedLogin('198.51.100.4')),
      ),
      stream(
        b,
        Array.from({ length: 3 }, () => failedLogin('198.51.100.4')),
      ),
    ]);
    await Promise.all([entriesSeen(a, 3), entriesSeen(b, 3)]);
    await Promise.all([a.detector.flush(), b.detector.flush()]);
    expect((await blocks(keys)).map((block) => block.subject)).toEqual(['198.51.100.4']);
    expect((await metric(a, 'security_events')) + (await metric(b, 'security_events'))).toBe(1);
  });
});

describe('alerts', () => {
  it('posts one alert to the webhook for the block, none for the failures before it', async () => {
    const texts: string[] = [];
    const server = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk) => {
        body += chunk;
      });
      request.on('end', () => {
        texts.push(JSON.parse(body).text);
        response.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const keys = prefix();
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
      const app = await startApp(keys, { now: 1_700_000_000_000 }, { THREAT_ALERT_WEBHOOK_URL: url });
      await stream(
        app,
        Array.from({ length: 7 }, () => failedLogin('198.51.100.8')),
      );
      await entriesSeen(app, 7);
      await app.detector.flush();
      await waitUntil('the alert', 5_000, {}, async () =>
        texts.length > 0 ? { done: true, value: undefined } : { done: false, detail: 'none yet' },
      );
      expect(texts).toEqual([expect.stringContaining('brute_force: IP blocked — IP 198.51.100.8')]);
      expect(await metric(app, 'sekisho_threat_alerts_total', { result: 'sent' })).toBe(1);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('restarts', () => {
  it('a restarted receiver carries on the count in Redis: no failure and no block is lost', async () => {
    const keys = prefix();
    const clock = { now: 1_700_000_000_000 };
    const first = await startApp(keys, clock);
    await stream(
      first,
      Array.from({ length: 3 }, () => failedLogin('198.51.100.5')),
    );
    await entriesSeen(first, 3);
    // Shutdown flushes what is pending.
    await first.close();
    apps.splice(apps.indexOf(first), 1);
    const second = await startApp(keys, clock);
    await stream(
      second,
      Array.from({ length: 3 }, () => failedLogin('198.51.100.5')),
    );
    await entriesSeen(second, 3);
    await second.detector.flush();
    expect((await blocks(keys)).map((block) => block.subject)).toEqual(['198.51.100.5']);
  });
});

describe('per-user rules through the receiver', () => {
  it('limits a user after 1,000 calls in an hour and blocks one past 100 MB', async () => {
    const keys = prefix();
    const clock = { now: 1_700_000_000_000 };
    const app = await startApp(keys, clock);
    await stream(
      app,
      Array.from({ length: 1_000 }, () => entry({ user: 'busy' })),
    );
    await stream(app, [entry({ user: 'hoarder', bytes: 100 * 1024 * 1024 })]);
    await entriesSeen(app, 1_001);
    await app.detector.flush();
    expect(await blocks(keys)).toEqual([]);
    await stream(app, [entry({ user: 'busy' }), entry({ user: 'hoarder', bytes: 1 })]);
    await entriesSeen(app, 1_003);
    await app.detector.flush();
    const found = await blocks(keys);
    expect(found).toHaveLength(2);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'limit', subject: 'busy', limit: 10, windowMs: 60_000 }),
        expect.objectContaining({ kind: 'user', subject: 'hoarder', untilMs: clock.now + 1_800_000 }),
      ]),
    );
  });
});

describe('buffering', () => {
  it('loses no fact below the buffer bound under load', async () => {
    const keys = prefix();
    const app = await startApp(keys, { now: 1_700_000_000_000 }, { THREAT_MAX_PENDING_KEYS: '1000' });
    const rules = {
      ...referenceRules,
      suspiciousUsage: { calls: 1_000_000, withinMs: 3_600_000, limit: 10, limitWindowMs: 60_000, forMs: 1_800_000 },
    };
    const total = 20_000;
    const entries = Array.from({ length: total }, (_, i) => entry({ user: `u${i % 500}`, rules }));
    await Promise.all([stream(app, entries.slice(0, total / 2)), stream(app, entries.slice(total / 2))]);
    await entriesSeen(app, total);
    await app.detector.flush();
    let counted = 0;
    for (let user = 0; user < 500; user++) {
      const buckets = await reader.hvals(threatKeys(keys).counter('calls', `u${user}`));
      counted += buckets.reduce((sum, value) => sum + Number(value), 0);
    }
    expect(counted).toBe(total);
    expect(await metric(app, 'sekisho_threat_facts_dropped_total')).toBe(0);
  });

  it('counts what it drops above the bound', async () => {
    const keys = prefix();
    const app = await startApp(keys, { now: 1_700_000_000_000 }, { THREAT_MAX_PENDING_KEYS: '50' });
    await stream(
      app,
      Array.from({ length: 120 }, (_, i) => entry({ user: `u${i}` })),
    );
    await entriesSeen(app, 120);
    expect(await metric(app, 'sekisho_threat_facts_dropped_total')).toBe(70);
    await app.detector.flush();
    expect(await metric(app, 'sekisho_threat_counts_flushed_total')).toBe(50);
  });

  it('pauses detection while Redis is down, keeps the counts, and resumes', async () => {
    if (!redis.control) throw new Error('this test needs a spawned redis-server (unset REDIS_URL)');
    const keys = prefix();
    const clock = { now: 1_700_000_000_000 };
    const app = await startApp(keys, clock);
    await stream(
      app,
      Array.from({ length: 6 }, () => failedLogin('198.51.100.9')),
    );
    await entriesSeen(app, 6);
    await redis.control.down();
    try {
      await app.detector.flush();
      expect(await metric(app, 'sekisho_threat_detection_paused')).toBe(1);
      expect(app.detector.pendingKeys).toBe(1);
    } finally {
      await redis.control.up();
    }
    await waitUntil('the detector to flush again', 10_000, {}, async () => {
      await app.detector.flush();
      return (await metric(app, 'sekisho_threat_detection_paused')) === 0
        ? { done: true, value: undefined }
        : { done: false, detail: 'still paused' };
    });
    expect((await blocks(keys)).map((block) => block.subject)).toEqual(['198.51.100.9']);
  });
});
