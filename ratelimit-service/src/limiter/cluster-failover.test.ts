import { setTimeout as sleep } from 'node:timers/promises';
import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisClusterHandle, redisCli, startRedisCluster } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadRateLimitConfig } from '../config';
import { authenticated, startTestService, testPolicy } from '../test-helpers';
import { counterKey, createValueHasher, keySlot } from './keys';
import { createRedisClient, type RedisConnection, RedisFault } from './redis-client';
import { RedisLimiter } from './redis-limiter';
import type { LimitRule } from './types';

// A Redis Cluster of 3 masters, each with a replica (redis-cli --cluster create
// --cluster-replicas 1), and a master killed (SIGKILL: a crash) under traffic: the cluster
// promotes its replica after cluster-node-timeout, ioredis finds the new master (MOVED, slot
// refresh), and the limiter keeps answering within its deadline and keeps counting.
//
// What an asynchronous-replication failover can lose: the increments the dead master had
// acknowledged but not yet streamed to its replica. Requests here come one at a time, so that
// is at most the last one or two; under load it is the replication lag times the rate, and for
// that window the limit lets as many requests more through. Nothing is counted twice: a request
// the client saw fail may still have been counted (its reply was lost), never the reverse.

const timeoutMs = 300;
// Generous (a shared machine): an answer, not a wait for the failover to finish.
const answerBound = timeoutMs + 2_000;
const hash = createValueHasher();
const logger = createLogger('ratelimit-service', { level: 'silent' });

let cluster: RedisClusterHandle;
let redis: RedisConnection;

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 1_000 });
  const { redis: topology } = loadRateLimitConfig({
    RATELIMIT_REDIS_MODE: 'cluster',
    RATELIMIT_REDIS_URL: cluster.urls.join(','),
  });
  redis = createRedisClient({ topology, commandTimeoutMs: timeoutMs, logger });
  await waitUntil('the cluster client to be ready', 20_000, {}, async () =>
    redis.status === 'ready' ? { done: true, value: undefined } : { done: false, detail: redis.status },
  );
}, 120_000);

afterAll(async () => {
  redis?.disconnect();
  await cluster?.stop();
});

interface Outcome {
  ok: boolean;
  code?: string;
  ms: number;
  error?: unknown;
}

it('keeps deciding within the deadline when a master is killed and its replica promoted, and keeps counting', async () => {
  const limiter = new RedisLimiter({ redis, hashValues: hash });
  const rule: LimitRule = {
    id: 'route:any',
    domain: 'shop',
    requestsPerWindow: 1_000_000,
    windowSeconds: 3600,
    blockSeconds: 0,
  };
  const key = counterKey(rule, hash(['u']));
  const slot = keySlot(key);
  const victim = await cluster.masterForSlot(slot);
  const [replica] = await cluster.replicasOf(victim);
  if (!replica) throw new Error(`master ${victim.port} has no replica`);
  await waitUntil('the replica to sync with its master', 20_000, {}, async () => {
    const info = await redisCli(replica.port, ['info', 'replication']);
    return info.includes('master_link_status:up') ? { done: true, value: undefined } : { done: false, detail: info };
  });

  const outcomes: Outcome[] = [];
  let running = true;
  const traffic = (async () => {
    for (let i = 0; running && i < 5_000; i++) {
      const started = performance.now();
      try {
        await limiter.hit([{ rule, values: ['u'] }], 1);
        outcomes.push({ ok: true, ms: performance.now() - started });
      } catch (error) {
        outcomes.push({ ok: false, code: (error as RedisFault).code, error, ms: performance.now() - started });
      }
      await sleep(10);
    }
  })();
  const decidedSince = (from: number) => outcomes.slice(from).filter((o) => o.ok).length;
  const decided = (from: number, count: number) =>
    waitUntil(`${count} decisions after request #${from}`, 40_000, {}, async () =>
      decidedSince(from) >= count
        ? { done: true, value: undefined }
        : { done: false, detail: `${decidedSince(from)} so far; last: ${String(outcomes.at(-1)?.error ?? 'ok')}` },
    );

  try {
    await decided(0, 30);
    await victim.kill();
    await waitUntil(`the replica ${replica.port} to be promoted`, 30_000, {}, async () => {
      const role = await redisCli(replica.port, ['role']).catch((e: Error) => e.message);
      return role.startsWith('master') ? { done: true, value: undefined } : { done: false, detail: role };
    });
    await cluster.waitHealthy();
    expect(await cluster.masterForSlot(slot)).toBe(replica);
    await decided(outcomes.length, 30);
  } finally {
    running = false;
    await traffic;
    // Back as a replica of the promoted node (its nodes.conf), for the next test.
    await victim.start();
  }

  // Every request was answered in time: a decision, or a RedisFault the failure mode answers.
  for (const o of outcomes) {
    expect(o.ms).toBeLessThan(answerBound);
    if (!o.ok) expect(o.error).toBeInstanceOf(RedisFault);
  }
  const codes = new Set(outcomes.filter((o) => !o.ok).map((o) => o.code));
  for (const code of codes)
    expect(['REDIS_UNAVAILABLE', 'REDIS_TIMEOUT', 'REDIS_CLUSTER_DOWN', 'REDIS_READONLY']).toContain(code);

  // The count went on from where the replica had it: what the promoted replica holds is every
  // decision, less at most the couple the dead master acknowledged but had not yet replicated,
  // plus at most the failed requests (counted, their reply lost).
  const ok = outcomes.filter((o) => o.ok).length;
  const failed = outcomes.length - ok;
  const count = Number(await redisCli(replica.port, ['hget', key, 'c']));
  expect(count).toBeGreaterThanOrEqual(ok - 2);
  expect(count).toBeLessThanOrEqual(ok + failed);
}, 150_000);

it('the service over gRPC: every ShouldRateLimit answered within the deadline through a master crash, no crash of its own', async () => {
  await cluster.waitHealthy();
  const service = await startTestService({
    redisUrl: cluster.urls.join(','),
    env: { RATELIMIT_REDIS_MODE: 'cluster', RATELIMIT_REDIS_FAILURE_MODE: 'deny', RATELIMIT_REDIS_TIMEOUT: '300ms' },
  });
  try {
    service.app.applyPolicy(testPolicy, 'v1');
    await waitUntil('the service to reach the cluster', 20_000, {}, async () =>
      service.app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: '' },
    );
    // Every key of the control plane's domain is in the slot of its hash tag (the default layout).
    const slot = keySlot(`{${rateLimitDomain}}`);
    const victim = await cluster.masterForSlot(slot);
    const [replica] = await cluster.replicasOf(victim);
    if (!replica) throw new Error(`master ${victim.port} has no replica`);
    await waitUntil('the replica to sync with its master', 30_000, {}, async () => {
      const info = await redisCli(replica.port, ['info', 'replication']);
      return info.includes('master_link_status:up') ? { done: true, value: undefined } : { done: false, detail: info };
    });

    // A new user per call, so each is under its limit: OK is Redis's decision, OVER_LIMIT
    // (with no limit reached) is the failure mode's deny while the slot has no master.
    const answers: Array<{ code: Code; ms: number }> = [];
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running && i < 5_000; i++) {
        const started = performance.now();
        const response = await service.call(
          { domain: rateLimitDomain, descriptors: [authenticated(`uid-${i}`)] },
          answerBound,
        );
        answers.push({ code: response.overallCode, ms: performance.now() - started });
        await sleep(10);
      }
    })();
    const okSince = (from: number) => answers.slice(from).filter((a) => a.code === Code.OK).length;
    const decided = (from: number, count: number) =>
      waitUntil(`${count} decisions after call #${from}`, 40_000, {}, async () =>
        okSince(from) >= count ? { done: true, value: undefined } : { done: false, detail: `${okSince(from)}` },
      );
    try {
      await decided(0, 20);
      await victim.kill();
      await waitUntil(`the replica ${replica.port} to be promoted`, 30_000, {}, async () => {
        const role = await redisCli(replica.port, ['role']).catch((e: Error) => e.message);
        return role.startsWith('master') ? { done: true, value: undefined } : { done: false, detail: role };
      });
      await decided(answers.length, 20);
    } finally {
      running = false;
      await traffic; // a call past its deadline rejects here, failing the test
      await victim.start();
    }
    for (const a of answers) expect(a.ms).toBeLessThan(answerBound);
    expect(answers.some((a) => a.code === Code.OVER_LIMIT)).toBe(true); // the failure mode answered meanwhile
    expect(service.app.status().redis).toBe('ready');
  } finally {
    await service.close();
  }
}, 150_000);
