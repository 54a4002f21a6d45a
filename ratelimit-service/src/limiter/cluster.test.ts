import { waitUntil } from '@sekisho/devstack/processes';
import { type RedisClusterHandle, redisCli, startRedisCluster } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadRateLimitConfig } from '../config';
import { authenticated, headersOf, startTestService, testPolicy } from '../test-helpers';
import { counterKey, createValueHasher, type KeyTag, keySlot } from './keys';
import { createRedisClient, type RedisConnection, RedisFault } from './redis-client';
import { RedisLimiter } from './redis-limiter';
import type { LimitCheck, LimitRule } from './types';

// The limiter on a real 3-master Redis Cluster (redis-cli --cluster create), through the
// client the service builds from RATELIMIT_REDIS_MODE=cluster.

let cluster: RedisClusterHandle;
const clients: RedisConnection[] = [];
let now: number;
const start = Date.UTC(2026, 0, 1);
const hash = createValueHasher();
const logger = createLogger('ratelimit-service', { level: 'silent' });

const rule = (id: string, limit: number, domain = 'shop', extra: Partial<LimitRule> = {}): LimitRule => ({
  id,
  domain,
  requestsPerWindow: limit,
  windowSeconds: 60,
  blockSeconds: 0,
  ...extra,
});

async function connect(): Promise<RedisConnection> {
  const { redis: topology } = loadRateLimitConfig({
    RATELIMIT_REDIS_MODE: 'cluster',
    RATELIMIT_REDIS_URL: cluster.urls.join(','),
  });
  const redis = createRedisClient({ topology, commandTimeoutMs: 500, logger });
  clients.push(redis);
  await waitUntil('the cluster client to be ready', 20_000, {}, async () =>
    redis.status === 'ready' ? { done: true, value: undefined } : { done: false, detail: redis.status },
  );
  return redis;
}

const limiterOn = (redis: RedisConnection, keyTag?: KeyTag) =>
  new RedisLimiter({ redis, hashValues: hash, clock: () => now, keyTag, maxBatch: 16 });

const onEveryNode = (args: string[]) => Promise.all(cluster.nodes.map((n) => redisCli(n.port, args)));

/** EVALSHA and EVAL calls summed over the masters since the last CONFIG RESETSTAT. */
async function scriptCalls(): Promise<{ evalsha: number; eval: number }> {
  const stats = await onEveryNode(['info', 'commandstats']);
  const sum = (name: string) =>
    stats.reduce((total, text) => total + Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(text)?.[1] ?? 0), 0);
  return { evalsha: sum('evalsha'), eval: sum('eval') };
}

/** How many keys each master holds. */
const keysPerNode = async () => (await onEveryNode(['dbsize'])).map(Number);

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 90_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await cluster?.stop();
});

beforeEach(async () => {
  await cluster.waitHealthy();
  await onEveryNode(['flushall']);
  now = start + 1_000;
});

it('places keys in the slots Redis computes (CLUSTER KEYSLOT)', async () => {
  const port = cluster.nodes[0]?.port as number;
  for (const key of [
    counterKey(rule('route:a', 5), hash(['u'])),
    counterKey(rule('route:a', 5), hash(['u']), 'counter'),
    'no-tag-at-all',
    'empty-tag-{}-x',
    '{only-open',
  ])
    expect(keySlot(key)).toBe(Number(await redisCli(port, ['cluster', 'keyslot', key])));
});

describe('domain hash tag (the default): one slot, one EVALSHA, atomic', () => {
  it('decides a shared route limit and per-user limits in one EVALSHA per call, every key on one master', async () => {
    const limiter = limiterOn(await connect());
    const route = rule('route:book', 5);
    const perUser = rule('route:book/user', 2);
    const call = (user: string) =>
      limiter.hit(
        [
          { rule: route, values: [] },
          { rule: perUser, values: [user] },
        ],
        1,
      );
    await call('warm-up'); // loads the script on its master (EVALSHA, NOSCRIPT, EVAL)
    await onEveryNode(['config', 'resetstat']);
    const answers = [];
    for (const user of ['a', 'a', 'a', 'b', 'b', 'c']) answers.push(await call(user));
    expect(await scriptCalls()).toEqual({ evalsha: 6, eval: 0 });
    // a, a allowed; the third a refused by its own limit; b, b allowed; then the route is full.
    expect(answers.map((d) => d.map((x) => x.overLimit))).toEqual([
      [false, false],
      [false, false],
      [false, true],
      [false, false],
      [false, false],
      [true, false],
    ]);
    const perNode = await keysPerNode();
    expect(perNode.filter((n) => n > 0)).toHaveLength(1);
  });

  it('does not count a request refused by the route limit against the user (across descriptors of one call)', async () => {
    const limiter = limiterOn(await connect());
    const route = rule('route:login', 1);
    const perUser = rule('route:login/user', 5);
    const checks: LimitCheck[] = [
      { rule: route, values: [] },
      { rule: perUser, values: ['u1'] },
    ];
    expect((await limiter.hit(checks, 1)).map((d) => d.overLimit)).toEqual([false, false]);
    for (let i = 0; i < 3; i++) expect((await limiter.hit(checks, 1)).map((d) => d.overLimit)).toEqual([true, false]);
    const key = counterKey(perUser, hash(['u1']));
    const node = cluster.nodeForSlot(keySlot(key));
    expect(await redisCli(node.port, ['hget', key, 'c'])).toBe('1');
  });

  it('two limiter instances (two cluster clients) share the counters and agree', async () => {
    const [one, two] = [limiterOn(await connect()), limiterOn(await connect())];
    const r = rule('route:shared', 5);
    const checks = [{ rule: r, values: ['u'] }];
    let allowed = 0;
    for (let i = 0; i < 10; i++) if (!(await (i % 2 ? one : two).hit(checks, 1))[0]?.overLimit) allowed++;
    expect(allowed).toBe(5);
    const [fromOne] = await one.hit(checks, 1);
    const [fromTwo] = await two.hit(checks, 1);
    expect(fromOne).toMatchObject({ overLimit: true, remaining: 0 });
    expect(fromTwo).toMatchObject({ overLimit: true, remaining: 0, resetSeconds: fromOne?.resetSeconds });
  });

  it('reloads the script transparently after SCRIPT FLUSH on every master', async () => {
    const limiter = limiterOn(await connect());
    const checks = [{ rule: rule('route:flush', 3), values: ['u'] }];
    await limiter.hit(checks, 1);
    await onEveryNode(['script', 'flush']);
    const [decision] = await limiter.hit(checks, 1);
    expect(decision).toMatchObject({ overLimit: false, remaining: 1 });
  });
});

describe('counter hash tag: spread over the masters, one script per slot', () => {
  it('spreads one domain over several masters and still decides every limit', async () => {
    const limiter = limiterOn(await connect(), 'counter');
    const perUser = rule('route:spread/user', 2);
    for (let u = 0; u < 30; u++) {
      const checks = [{ rule: perUser, values: [`user-${u}`] }];
      expect((await limiter.hit(checks, 1))[0]?.overLimit).toBe(false);
      expect((await limiter.hit(checks, 1))[0]?.overLimit).toBe(false);
      expect((await limiter.hit(checks, 1))[0]?.overLimit).toBe(true);
    }
    expect((await keysPerNode()).filter((n) => n > 0).length).toBeGreaterThan(1);
  });

  it('sends a call whose keys span slots as one script per slot, each atomic on its own', async () => {
    const limiter = limiterOn(await connect(), 'counter');
    const route = rule('route:mixed', 1);
    // Find a user whose counter lives in another slot than the route counter.
    const user = Array.from({ length: 50 }, (_, i) => `u${i}`).find(
      (u) =>
        keySlot(counterKey(route, hash([]), 'counter')) !==
        keySlot(counterKey(rule('route:mixed/user', 5), hash([u]), 'counter')),
    ) as string;
    const perUser = rule('route:mixed/user', 5);
    const checks: LimitCheck[] = [
      { rule: route, values: [] },
      { rule: perUser, values: [user] },
    ];
    await limiter.hit(checks, 1); // warm-up: the script reaches both masters
    await onEveryNode(['config', 'resetstat']);
    const [r1, u1] = await limiter.hit(checks, 1);
    expect([r1?.overLimit, u1?.overLimit]).toEqual([true, false]);
    expect((await scriptCalls()).evalsha).toBe(2);
    // The trade-off: the user's slot counted the request the route's slot refused.
    expect(u1?.remaining).toBe(3);
  });
});

describe('batches on a cluster: one script call per slot', () => {
  it('sends the concurrent requests of several domains as one EVALSHA per slot, each decided alone', async () => {
    const limiter = limiterOn(await connect());
    // Three domains in three different slots, two of them possibly on one master.
    const domains = ['shop', 'admin', 'billing'];
    expect(new Set(domains.map((d) => keySlot(`{${d}}`))).size).toBe(3);
    const routes = domains.map((d) => rule(`route:${d}`, 2, d));
    const perUser = domains.map((d) => rule(`route:${d}/user`, 5, d));
    const call = (d: number, user: string) =>
      limiter.hit(
        [
          { rule: routes[d] as LimitRule, values: [] },
          { rule: perUser[d] as LimitRule, values: [user] },
        ],
        1,
      );
    await Promise.all(domains.map((_, d) => call(d, 'warm-up'))); // loads the script on each master
    await onEveryNode(['config', 'resetstat']);
    // Per domain: a and b fill the route's remaining 1 and then refuse; c refused too.
    const answers = await Promise.all(domains.flatMap((_, d) => ['a', 'b', 'c'].map((u) => call(d, u))));
    expect(await scriptCalls()).toEqual({ evalsha: 3, eval: 0 });
    expect(answers.map((a) => a.map((x) => x.overLimit))).toEqual(
      domains.flatMap(() => [
        [false, false],
        [true, false],
        [true, false],
      ]),
    );
    // The refused requests counted nothing: only a's per-user counter exists in each domain.
    for (const d of domains.keys())
      for (const [user, expected] of [
        ['a', '1'],
        ['b', null],
        ['c', null],
      ] as const) {
        const key = counterKey(perUser[d] as LimitRule, hash([user]));
        expect(await redisCli(cluster.nodeForSlot(keySlot(key)).port, ['hget', key, 'c'])).toBe(expected ?? '');
      }
  });

  it('reloads the script for batches on every master after SCRIPT FLUSH', async () => {
    const limiter = limiterOn(await connect());
    const rules = ['shop', 'admin', 'billing'].map((d) => rule(`route:${d}:flush`, 10, d));
    const round = () =>
      Promise.all(rules.flatMap((r) => [1, 2, 3].map(() => limiter.hit([{ rule: r, values: [] }], 1))));
    await round();
    await onEveryNode(['script', 'flush']);
    await onEveryNode(['config', 'resetstat']);
    const answers = await round();
    expect(answers.map((a) => a[0]?.remaining)).toEqual(rules.flatMap(() => [6, 5, 4]));
    // Per slot, one EVALSHA met NOSCRIPT and one EVAL carried its batch.
    expect(await scriptCalls()).toEqual({ evalsha: 3, eval: 3 });
  });

  it("with the counter layout, puts each part of the requests in its slot's batch", async () => {
    const limiter = limiterOn(await connect(), 'counter');
    const route = rule('route:parts', 100);
    const perUser = rule('route:parts/user', 100);
    const users = Array.from({ length: 8 }, (_, i) => `user-${i}`);
    const checks = (user: string): LimitCheck[] => [
      { rule: route, values: [] },
      { rule: perUser, values: [user] },
    ];
    const slots = new Set([
      keySlot(counterKey(route, hash([]), 'counter')),
      ...users.map((u) => keySlot(counterKey(perUser, hash([u]), 'counter'))),
    ]);
    expect(slots.size).toBeGreaterThan(2);
    for (const u of users) await limiter.hit(checks(u), 1); // the script reaches every master
    await onEveryNode(['config', 'resetstat']);
    const answers = await Promise.all(users.map((u) => limiter.hit(checks(u), 1)));
    expect((await scriptCalls()).evalsha).toBe(slots.size);
    // The shared route counter: 8 before, then 8 more in order; each user's own: its second.
    expect(answers.map((a) => a[0]?.remaining)).toEqual(users.map((_, i) => 100 - 8 - (i + 1)));
    expect(answers.map((a) => a[1]?.remaining)).toEqual(users.map(() => 98));
  });
});

describe('slot migration (MOVED and ASK, followed by ioredis)', () => {
  it('follows ASK while a slot moves and MOVED after, keeping the counters and blocks it moved', async () => {
    const limiter = limiterOn(await connect());
    const [from, to] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[1]];
    const domain = Array.from({ length: 200 }, (_, i) => `moving-${i}`).find(
      (d) => cluster.nodeForSlot(keySlot(`{${d}}`)) === from,
    ) as string;
    const slot = String(keySlot(`{${domain}}`));
    const counting = [{ rule: rule('counting', 10, domain), values: ['u'] }];
    const blocking = [{ rule: rule('blocking', 1, domain, { blockSeconds: 900 }), values: ['u'] }];
    const hit = async (checks: LimitCheck[]) => (await limiter.hit(checks, 1))[0];
    expect((await hit(counting))?.remaining).toBe(9);
    expect((await hit(counting))?.remaining).toBe(8);
    await hit(blocking);
    expect(await hit(blocking)).toMatchObject({ overLimit: true, blocked: false }); // starts the block

    const [fromId, toId] = await Promise.all([
      redisCli(from.port, ['cluster', 'myid']),
      redisCli(to.port, ['cluster', 'myid']),
    ]);
    await redisCli(to.port, ['cluster', 'setslot', slot, 'importing', fromId]);
    await redisCli(from.port, ['cluster', 'setslot', slot, 'migrating', toId]);
    const keys = (await redisCli(from.port, ['cluster', 'getkeysinslot', slot, '100'])).split('\n').filter(Boolean);
    // The counting counter, the blocking counter, its block and the domain's index of active blocks.
    expect(keys).toHaveLength(4);
    await redisCli(from.port, ['migrate', '127.0.0.1', String(to.port), '', '0', '5000', 'keys', ...keys]);

    // Mid-migration `from` answers ASK for keys it no longer has; the client asks `to`
    // (ASKING). `to` runs a script whose keys all exist there (the blocked rule: counter and
    // block): a decision.
    expect(await hit(blocking)).toMatchObject({ overLimit: true, blocked: true });
    // A script with a key that exists on neither side (the counting rule's block key) gets
    // TRYAGAIN from Redis until the migration ends: a RedisFault in time, the failure mode
    // answers, nothing is counted.
    const started = performance.now();
    const error = await limiter.hit(counting, 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RedisFault);
    // Retried (TRYAGAIN, ASK) until ioredis gives up, or until the command timeout under load.
    expect(['REDIS_CLUSTER_DOWN', 'REDIS_TIMEOUT'], String(error)).toContain((error as RedisFault).code);
    expect(performance.now() - started).toBeLessThan(2_500);

    for (const node of cluster.nodes) await redisCli(node.port, ['cluster', 'setslot', slot, 'node', toId]);
    // Now `from` answers MOVED; the client follows it and refreshes its slot map.
    expect((await hit(counting))?.remaining).toBe(7);
    expect((await hit(counting))?.remaining).toBe(6);
    expect(await hit(blocking)).toMatchObject({ overLimit: true, blocked: true });
    expect(Number(await redisCli(from.port, ['dbsize']))).toBe(0);
    expect(Number(await redisCli(to.port, ['dbsize']))).toBe(4);

    // The slot back where redis-cli put it (nodeForSlot, the other tests), empty.
    await redisCli(to.port, ['del', ...keys]);
    for (const node of cluster.nodes) await redisCli(node.port, ['cluster', 'setslot', slot, 'node', fromId]);
  });
});

describe('cluster faults', () => {
  it('answers CLUSTERDOWN (and an unreachable master) with a RedisFault in time, then decides again', async () => {
    const limiter = limiterOn(await connect());
    const [down, alive] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[1]];
    // A domain served by the master that stays up, and one served by the master that stops.
    const domainOn = (node: typeof down) =>
      Array.from({ length: 200 }, (_, i) => `domain-${i}`).find(
        (d) => cluster.nodeForSlot(keySlot(`{${d}}`)) === node,
      ) as string;
    const onAlive = [{ rule: rule('r', 100, domainOn(alive)), values: ['u'] }];
    const onDown = [{ rule: rule('r', 100, domainOn(down)), values: ['u'] }];
    expect((await limiter.hit(onAlive, 1))[0]?.overLimit).toBe(false);
    expect((await limiter.hit(onDown, 1))[0]?.overLimit).toBe(false);

    await down.stop();
    try {
      await waitUntil('the surviving masters to mark the cluster down', 20_000, {}, async () => {
        const info = await redisCli(alive.port, ['cluster', 'info']);
        return info.includes('cluster_state:fail') ? { done: true, value: undefined } : { done: false, detail: info };
      });
      for (const [checks, codes] of [
        [onAlive, ['REDIS_CLUSTER_DOWN']],
        // Refused by the stopped master, or (after ioredis retries elsewhere) CLUSTERDOWN.
        [onDown, ['REDIS_UNAVAILABLE', 'REDIS_TIMEOUT', 'REDIS_CLUSTER_DOWN']],
      ] as const) {
        const started = performance.now();
        const error = await limiter.hit(checks, 1).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(RedisFault);
        expect(codes, String(error)).toContain((error as RedisFault).code);
        // Generous (a shared machine): an answer, not a wait for the cluster to heal.
        expect(performance.now() - started).toBeLessThan(2_500);
      }
    } finally {
      await down.start();
    }
    await cluster.waitHealthy();
    await waitUntil('the limiter to decide on both masters again', 20_000, {}, async () => {
      try {
        await limiter.hit(onAlive, 1);
        await limiter.hit(onDown, 1);
        return { done: true, value: undefined };
      } catch (error) {
        return { done: false, detail: String(error) };
      }
    });
  }, 60_000);
});

describe('the service on a cluster (RATELIMIT_REDIS_MODE=cluster, real gRPC)', () => {
  it('decides ShouldRateLimit on the cluster, and answers by the failure mode while the cluster is down', async () => {
    const service = await startTestService({
      redisUrl: cluster.urls.join(','),
      env: { RATELIMIT_REDIS_MODE: 'cluster', RATELIMIT_REDIS_FAILURE_MODE: 'deny', RATELIMIT_REDIS_TIMEOUT: '300ms' },
    });
    try {
      service.app.applyPolicy(testPolicy, 'v1');
      await waitUntil('the service to reach the cluster', 20_000, {}, async () =>
        service.app.status().redis === 'ready' ? { done: true, value: undefined } : { done: false, detail: '' },
      );
      expect(service.app.status().redis_mode).toBe('cluster');
      const request = { domain: rateLimitDomain, descriptors: [authenticated('uid-cluster')] };
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await service.call(request)).overallCode);
      expect(codes).toEqual([Code.OK, Code.OK, Code.OK, Code.OVER_LIMIT]);
      expect(headersOf(await service.call(request))['ratelimit-policy']).toMatch(/(^|=)3;w=60$/);

      // Every master down: the failure mode (deny) answers, the process stays up.
      await Promise.all(cluster.nodes.map((n) => n.stop()));
      const other = { domain: rateLimitDomain, descriptors: [authenticated('uid-other')] };
      const response = await service.call(other);
      expect(response.overallCode).toBe(Code.OVER_LIMIT);
      expect(headersOf(response)).toEqual({ 'retry-after': '1' });
    } finally {
      await Promise.all(cluster.nodes.map((n) => n.start()));
      await service.close();
    }
    await cluster.waitHealthy();
  }, 60_000);
});
