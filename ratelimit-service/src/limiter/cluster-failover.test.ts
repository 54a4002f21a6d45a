import { waitUntil } from '@sekisho/devstack/processes';
import {
  type RedisClusterHandle,
  redisCli,
  startRedisCluster,
  waitForMasterRole,
  waitForReplicaSync,
} from '@sekisho/devstack/redis';
import { startTraffic } from '@sekisho/devstack/redis-failover';
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
  await waitForReplicaSync(replica.port, {}, 20_000);

  const traffic = startTraffic(() => limiter.hit([{ rule, values: ['u'] }], 1), { maxCalls: 5_000 });
  const { outcomes } = traffic;
  try {
    await traffic.decided(0, 30, 40_000);
    await victim.kill();
    await waitForMasterRole(replica.port);
    await cluster.waitHealthy();
    expect(await cluster.masterForSlot(slot)).toBe(replica);
    await traffic.decided(outcomes.length, 30, 40_000);
  } finally {
    await traffic.stop();
    // Back as a replica of the promoted node (its nodes.conf), for the next test.
    await victim.start();
  }

  // Every request was answered in time: a decision, or a RedisFault the failure mode answers.
  for (const o of outcomes) {
    expect(o.ms).toBeLessThan(answerBound);
    if (!o.ok) expect(o.error).toBeInstanceOf(RedisFault);
  }
  const codes = new Set(outcomes.flatMap((o) => (o.ok ? [] : [(o.error as RedisFault).code])));
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
    await waitForReplicaSync(replica.port);

    // A new user per call, so each is under its limit: OK is Redis's decision, OVER_LIMIT
    // (with no limit reached) is the failure mode's deny while the slot has no master.
    const traffic = startTraffic(
      (i) => service.call({ domain: rateLimitDomain, descriptors: [authenticated(`uid-${i}`)] }, answerBound),
      { maxCalls: 5_000, isDecision: (response) => response.overallCode === Code.OK },
    );
    try {
      await traffic.decided(0, 20, 40_000);
      await victim.kill();
      await waitForMasterRole(replica.port);
      await traffic.decided(traffic.outcomes.length, 20, 40_000);
    } finally {
      await traffic.stop();
      await victim.start();
    }
    // A call past its deadline is rejected: none may be.
    expect(traffic.outcomes.filter((o) => !o.ok)).toEqual([]);
    const answers = traffic.outcomes.flatMap((o) => (o.ok ? [{ code: o.value.overallCode, ms: o.ms }] : []));
    for (const a of answers) expect(a.ms).toBeLessThan(answerBound);
    expect(answers.some((a) => a.code === Code.OVER_LIMIT)).toBe(true); // the failure mode answered meanwhile
    expect(service.app.status().redis).toBe('ready');
  } finally {
    await service.close();
  }
}, 150_000);
