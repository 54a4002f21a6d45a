import { waitUntil } from '@sekisho/devstack/processes';
import {
  type RedisClusterHandle,
  type RedisSentinelHandle,
  redisCli,
  startRedisCluster,
  startRedisSentinel,
} from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  eventuallyAsync,
  headersOf,
  metricValue,
  routeForIp,
  startTestService,
  type TestService,
  testPolicy,
} from '../test-helpers';

// Blocks known to every replica (the local failure mode) on the topologies the service
// runs on: Sentinel (the announcement subscriber follows a failover and resubscribes, and
// reads the block indexes again) and a 3-master cluster (classic PUBLISH is broadcast to
// every node, the indexes are read from every master). Two replicas of the whole service
// over real gRPC; then every data node is stopped and the replica that never saw the
// client refuses it as blocked.

const deadlineMs = 1000;
const env = {
  RATELIMIT_REDIS_FAILURE_MODE: 'local',
  RATELIMIT_LOCAL_REPLICAS: '2',
  RATELIMIT_REDIS_TIMEOUT: '300ms',
  RATELIMIT_BREAKER_FAILURES: '3',
  RATELIMIT_BREAKER_OPEN_FOR: '300ms',
};
const learned = 'sekisho_ratelimit_blocks_learned_total';
const loaded = 'sekisho_ratelimit_blocks_loaded_total';

let ips = 0;
const freshIp = () => `192.0.2.${++ips}`;
const login = (ip: string) => ({ domain: rateLimitDomain, descriptors: [routeForIp('login', ip)] });

const ready = (service: TestService) =>
  waitUntil('the service to reach Redis', 60_000, {}, async () =>
    service.app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: '' },
  );

/** Through `via` (Redis deciding): 1 login per minute, then 15 minutes blocked; `peer` learns it. */
async function earnBlock(via: TestService, peer: TestService): Promise<string> {
  const ip = freshIp();
  const before = await metricValue(peer, learned);
  // Redis may still be finding its (new) master: a request answered in memory earns no block in Redis.
  await waitUntil('a login decided by Redis', 60_000, {}, async () => {
    const response = await via.call(login(ip), deadlineMs);
    return via.app.status().mode_in_force === 'redis' && response.overallCode === Code.OVER_LIMIT
      ? { done: true, value: undefined }
      : { done: false, detail: String(via.app.status().mode_in_force) };
  });
  await eventuallyAsync(async () => (await metricValue(peer, learned)) > before, 20_000);
  return ip;
}

async function expectBlocked(service: TestService, ip: string) {
  const response = await service.call(login(ip), deadlineMs);
  expect(response.overallCode).toBe(Code.OVER_LIMIT);
  expect(Number(headersOf(response)['retry-after'])).toBeGreaterThan(800);
}

async function startPair(redisUrl: string, extra: Record<string, string>): Promise<[TestService, TestService]> {
  const pair = await Promise.all([0, 1].map(() => startTestService({ redisUrl, env: { ...env, ...extra } })));
  for (const service of pair) {
    service.app.applyPolicy(testPolicy, 'v1');
    await ready(service);
  }
  return pair as [TestService, TestService];
}

describe('Sentinel: blocks announced across a failover', () => {
  let sentinel: RedisSentinelHandle;
  let a: TestService;
  let b: TestService;

  beforeAll(async () => {
    sentinel = await startRedisSentinel({ sentinels: 1 });
    [a, b] = await startPair(sentinel.sentinelUrls.join(','), {
      RATELIMIT_REDIS_MODE: 'sentinel',
      RATELIMIT_REDIS_SENTINEL_MASTER: sentinel.masterName,
    });
  }, 90_000);

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await sentinel?.stop();
  });

  it('reloads the blocks when the subscriber reconnects to the new master, learns the next ones, and keeps them all through an outage', async () => {
    const before = await earnBlock(a, b);
    const { master, replica } = await sentinel.syncedRoles();
    const loadedBefore = await metricValue(b, loaded);
    // The master dies: every connection to it drops, and reconnects to the promoted replica.
    await master.stop();
    await sentinel.waitForNewMaster(master.port, 60_000);
    // B's subscriber resubscribed on the new master and read its index (the replicated block).
    await eventuallyAsync(async () => (await metricValue(b, loaded)) > loadedBefore, 30_000);
    await ready(a);
    const after = await earnBlock(a, b);
    expect(await redisCli(replica.port, ['zcard', `sekisho:rl:{${rateLimitDomain}}:blocks`])).toBe('2');

    await replica.stop();
    try {
      await expectBlocked(b, before);
      await expectBlocked(b, after);
      // Another address is decided in memory (Redis fails), not refused.
      expect((await b.call(login(freshIp()), deadlineMs)).overallCode).toBe(Code.OK);
      expect(b.app.status().mode_in_force).toBe('local');
    } finally {
      await master.start();
      await replica.start();
    }
  }, 180_000);
});

describe('Cluster (3 masters): blocks broadcast to every replica', () => {
  let cluster: RedisClusterHandle;
  let a: TestService;
  let b: TestService;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    [a, b] = await startPair(cluster.urls.join(','), { RATELIMIT_REDIS_MODE: 'cluster' });
  }, 90_000);

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await cluster?.stop();
  });

  it('refuses on B a client blocked through A, a replica started later learns it, with every master down', async () => {
    const ip = await earnBlock(a, b);
    const c = await startTestService({
      redisUrl: cluster.urls.join(','),
      env: { ...env, RATELIMIT_REDIS_MODE: 'cluster' },
    });
    try {
      c.app.applyPolicy(testPolicy, 'v1');
      await eventuallyAsync(async () => (await metricValue(c, loaded)) >= 1, 30_000);
      await Promise.all(cluster.nodes.map((n) => n.stop()));
      await expectBlocked(b, ip);
      await expectBlocked(c, ip);
      // Another address is decided in memory, not refused.
      expect((await b.call(login(freshIp()), deadlineMs)).overallCode).toBe(Code.OK);
    } finally {
      await c.close();
      await Promise.all(cluster.nodes.map((n) => n.start()));
    }
    await cluster.waitHealthy();
  }, 120_000);

  it('announces blocks with the counter key layout too (keys spread over the masters)', async () => {
    const [x, y] = await startPair(cluster.urls.join(','), {
      RATELIMIT_REDIS_MODE: 'cluster',
      RATELIMIT_REDIS_KEY_TAG: 'counter',
    });
    try {
      const ip = await earnBlock(x, y);
      await Promise.all(cluster.nodes.map((n) => n.stop()));
      await expectBlocked(y, ip);
    } finally {
      await x.close();
      await y.close();
      await Promise.all(cluster.nodes.map((n) => n.start()));
    }
    await cluster.waitHealthy();
  }, 120_000);
});
