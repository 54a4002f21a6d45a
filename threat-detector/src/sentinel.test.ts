import { credentials } from '@grpc/grpc-js';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisSentinelHandle, redisCli, startRedisSentinel, waitForReplicaSync } from '@sekisho/devstack/redis';
import type { HTTPAccessLogEntry } from '@sekisho/proto/envoy/data/accesslog/v3/accesslog';
import { AccessLogServiceClient, StreamAccessLogsMessage } from '@sekisho/proto/envoy/service/accesslog/v3/als';
import { createLogger } from '@sekisho/service-kit/logger';
import { threatKeys } from '@sekisho/service-kit/threat-contract';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startThreatDetectorApp, type ThreatDetectorApp } from './app';
import { configSchema, loadThreatDetectorConfig } from './config';
import { entry } from './test-entries';

// The detector through a real Sentinel setup (a master, a replica, three sentinels, ACL users on
// the data nodes and on the sentinels), configured by THREAT_REDIS_*: a brute force is blocked
// on the first master, and after a SENTINEL FAILOVER the next one is blocked on the new master
// (the client follows the master the sentinels name).

const users = {
  dataUser: { name: 'detector', password: 'detector-data-acl-s3cret' },
  sentinelUser: { name: 'watcher', password: 'detector-sentinel-acl-s3cret' },
};
const keyPrefix = 'test:sentinel:threats';
let sentinel: RedisSentinelHandle;
let app: ThreatDetectorApp;
let client: AccessLogServiceClient;

beforeAll(async () => {
  sentinel = await startRedisSentinel({ sentinels: 3, ...users });
  const env = {
    THREAT_GRPC_PORT: '0',
    THREAT_ADMIN_PORT: '0',
    THREAT_FLUSH_INTERVAL: '10s',
    THREAT_REDIS_KEY_PREFIX: keyPrefix,
    THREAT_REDIS_MODE: 'sentinel',
    THREAT_REDIS_URL: sentinel.sentinelUrls.join(','),
    THREAT_REDIS_SENTINEL_MASTER: sentinel.masterName,
    THREAT_REDIS_USERNAME: users.dataUser.name,
    THREAT_REDIS_PASSWORD: users.dataUser.password,
    THREAT_REDIS_SENTINEL_USERNAME: users.sentinelUser.name,
    THREAT_REDIS_SENTINEL_PASSWORD: users.sentinelUser.password,
  };
  loadThreatDetectorConfig(env); // the checks main.ts runs
  app = await startThreatDetectorApp(configSchema.parse(env), {
    logger: createLogger('threat-detector', { level: 'silent' }),
  });
  client = new AccessLogServiceClient(`127.0.0.1:${app.grpcPort}`, credentials.createInsecure());
  await waitUntil('the detector to reach the master', 20_000, {}, async () =>
    app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: app.status().redis },
  );
}, 120_000);

afterAll(async () => {
  client?.close();
  await app?.close();
  await sentinel?.stop();
});

async function stream(entries: HTTPAccessLogEntry[]) {
  await new Promise<void>((resolve, reject) => {
    const call = client.streamAccessLogs((error) => (error ? reject(error) : resolve()));
    call.write(
      StreamAccessLogsMessage.fromPartial({ identifier: { node: { id: 'ingress' }, logName: 'sekisho_threat' } }),
    );
    call.write(StreamAccessLogsMessage.fromPartial({ httpLogs: { logEntry: entries } }));
    call.end();
  });
}

/** Six failed logins from `ip`, flushed (again, while a failover is under way) until the master the sentinels name holds the block. */
async function bruteForceBlockedOnMaster(ip: string) {
  await stream(Array.from({ length: 6 }, () => entry({ ip, status: 401, route: 'sign-in' })));
  await waitUntil(`the block of ${ip} on the master`, 30_000, {}, async () => {
    await app.detector.flush();
    const port = await sentinel.masterPort();
    const record = await redisCli(port, ['hget', threatKeys(keyPrefix).records, `ip:${ip}`], sentinel.dataAuth).catch(
      (e: Error) => e.message,
    );
    return record.includes('"brute_force"') ? { done: true, value: port } : { done: false, detail: record };
  });
}

it('blocks a brute force on the master, and the next one on the new master after SENTINEL FAILOVER', async () => {
  const first = await sentinel.masterPort();
  await bruteForceBlockedOnMaster('198.51.100.20');
  const second = await sentinel.failover();
  expect(second).not.toBe(first);
  // Until the sentinels turn the old master into a replica it still takes writes, and what it
  // takes then is dropped when it resyncs (the failover's window, as for any Sentinel client).
  // Once it is a replica, a write there gets READONLY: the client reconnects to the new master
  // and the flush's counts go back into the buffer for the next flush.
  await waitForReplicaSync(first, sentinel.dataAuth);
  await bruteForceBlockedOnMaster('198.51.100.21');
  // The first block was replicated, and is still there on the new master.
  const records = await redisCli(second, ['hkeys', threatKeys(keyPrefix).records], sentinel.dataAuth);
  expect(records.split('\n').sort()).toEqual(['ip:198.51.100.20', 'ip:198.51.100.21']);
}, 120_000);
