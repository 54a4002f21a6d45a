import { type RedisHandle, type RedisOutageControl, startRedis } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  authenticated,
  descriptor,
  eventually,
  headersOf,
  startTestService,
  type TestService,
  testPolicy,
} from './test-helpers';

// A real redis-server that the test stops, restarts and freezes under a running
// service. With REDIS_URL set, startRedis hands out a server this process cannot
// stop (no outage controls), so the suite is skipped.

// A user of its own per call: scripts sent while Redis is frozen still run when it
// resumes, and must not eat into the limit of a later call.
let users = 0;
const redisErrors = (metrics: string) =>
  Number(metrics.match(/sekisho_ratelimit_redis_errors_total\{[^}]*\} (\d+)/)?.[1] ?? Number.NaN);
const request = () => ({ domain: rateLimitDomain, descriptors: [authenticated(`uid-${++users}`)] });

describe.skipIf(Boolean(process.env.REDIS_URL)).each(['allow', 'deny'] as const)(
  'Redis outage with RATELIMIT_REDIS_FAILURE_MODE=%s',
  (mode) => {
    let redisServer: RedisHandle;
    let control: RedisOutageControl;
    let service: TestService;
    const refused = mode === 'deny';
    const expectFailureAnswer = async () => {
      const response = await service.call(request());
      expect(response.overallCode).toBe(refused ? Code.OVER_LIMIT : Code.OK);
      expect(response.statuses.map((s) => s.code)).toEqual([refused ? Code.OVER_LIMIT : Code.OK]);
      expect(headersOf(response)).toEqual(refused ? { 'retry-after': '1' } : {});
    };
    const expectDecidedAnswer = async () => {
      const response = await service.call(request());
      expect(response.overallCode).toBe(Code.OK);
      expect(headersOf(response).ratelimit).toMatch(/^"authenticated\/user\/60s";r=2;t=\d+$/);
    };

    beforeAll(async () => {
      redisServer = await startRedis();
      if (!redisServer.control) throw new Error(`no outage controls for a Redis from ${redisServer.source}`);
      control = redisServer.control;
      service = await startTestService({
        redisUrl: redisServer.url,
        env: { RATELIMIT_REDIS_FAILURE_MODE: mode, RATELIMIT_REDIS_TIMEOUT: '50ms' },
      });
      await eventually(() => service.app.status().redis === 'ready');
    });

    afterAll(async () => {
      await service?.close();
      await redisServer?.stop();
    });

    it(`${refused ? 'refuses' : 'allows'} requests before the first policy by the same mode`, async () => {
      await expectFailureAnswer();
      expect(service.app.isReady()).toBe(false);
      expect(service.app.status()).toMatchObject({ policy_version: null, redis_connected_since_start: true });
    });

    it(`${refused ? 'refuses' : 'allows'} while Redis is down, stays ready, counts the errors, and recovers`, async () => {
      service.app.applyPolicy(testPolicy, 'v1');
      await expectDecidedAnswer();
      expect(service.app.isReady()).toBe(true);

      await control.down();
      await eventually(() => service.app.status().redis !== 'ready');
      // Still ready: taken out of service, the pod could not answer by its failure mode.
      expect(service.app.isReady()).toBe(true);
      expect((await service.admin('/readyz')).status).toBe(200);
      const logsBefore = service.logs.length;
      for (let i = 0; i < 5; i++) await expectFailureAnswer();
      expect(service.logs.some((r) => r.event_type === 'redis_disconnected')).toBe(true);

      // A descriptor no rule matches needs no Redis, so it is allowed in either mode.
      const unmatched = await service.call({ domain: rateLimitDomain, descriptors: [descriptor(['other', 'x'])] });
      expect(unmatched.overallCode).toBe(Code.OK);

      const metrics = (await service.admin('/metrics')).text;
      expect(redisErrors(metrics)).toBeGreaterThanOrEqual(5);
      expect(metrics).toMatch(
        new RegExp(`sekisho_ratelimit_decisions_total\\{[^}]*result="failure_${refused ? 'denied' : 'allowed'}"`),
      );
      expect(metrics).toMatch(/sekisho_ratelimit_redis_up\{[^}]*\} 0/);
      expect(JSON.parse((await service.admin('/status')).text)).toMatchObject({
        policy_version: 'v1',
        redis_connected_since_start: true,
      });
      // Five failed calls, one log record: an outage must not write a line per request.
      const failures = service.logs.slice(logsBefore).filter((r) => r.event_type === 'ratelimit_backend_error');
      expect(failures).toHaveLength(1);
      expect(failures[0]).toMatchObject({
        level: 'ERROR',
        category: 'technical',
        failure_mode: mode,
        error_code: 'REDIS_UNAVAILABLE',
      });

      // Back, empty and without the script: EVALSHA falls back to EVAL.
      await control.up();
      await eventually(() => service.app.status().redis === 'ready');
      await expectDecidedAnswer();
    });

    it(`${refused ? 'refuses' : 'allows'} when Redis hangs, within the command timeout, and recovers`, async () => {
      await expectDecidedAnswer();
      const errorsBefore = redisErrors((await service.admin('/metrics')).text);
      control.pause();
      try {
        await expectFailureAnswer();
        await expectFailureAnswer();
        // Still connected: the answers above came from the command timeout, not a closed socket.
        expect(service.app.status().redis).toBe('ready');
      } finally {
        control.resume();
      }
      expect(redisErrors((await service.admin('/metrics')).text)).toBe(errorsBefore + 2);
      expect(service.app.isReady()).toBe(true);
      await expectDecidedAnswer();
    });

    it('is not ready while Redis has never been reached since start, and answers by the mode meanwhile', async () => {
      await control.down();
      const late = await startTestService({
        redisUrl: redisServer.url,
        env: { RATELIMIT_REDIS_FAILURE_MODE: mode, RATELIMIT_REDIS_TIMEOUT: '50ms' },
      });
      try {
        late.app.applyPolicy(testPolicy, 'v1');
        expect(late.app.isReady()).toBe(false);
        expect((await late.admin('/readyz')).status).toBe(503);
        expect(late.app.status()).toMatchObject({ policy_version: 'v1', redis_connected_since_start: false });
        const response = await late.call(request());
        expect(response.overallCode).toBe(refused ? Code.OVER_LIMIT : Code.OK);

        await control.up();
        await eventually(() => late.app.isReady());
        expect((await late.admin('/readyz')).status).toBe(200);
      } finally {
        await late.close();
      }
    });
  },
);
