import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { freePort, spawnProcess } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import {
  RateLimitResponse_Code as Code,
  RateLimitRequest,
  type RateLimitResponse,
  RateLimitServiceClient,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// main.ts as an operator runs it: `npx tsx ratelimit-service/src/main.ts`.

const main = fileURLToPath(new URL('./main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));

let redis: RedisHandle;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe('main.ts', () => {
  it('stops with exit code 2 and names the variable when configuration is invalid', async () => {
    const proc = spawnProcess({
      name: 'ratelimit-service',
      command: tsx,
      args: [main],
      env: { ...process.env, RATELIMIT_REDIS_FAILURE_MODE: 'sometimes' },
      reportUnexpectedExit: false,
    });
    const exit = await proc.exited;
    expect(exit.code).toBe(2);
    expect(proc.logs()).toContain('RATELIMIT_REDIS_FAILURE_MODE');
  });

  it('exits 1 with a startup_failed record when its gRPC port is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as AddressInfo).port;
    try {
      const proc = spawnProcess({
        name: 'ratelimit-service',
        command: tsx,
        args: [main],
        env: { ...process.env, RATELIMIT_GRPC_PORT: String(taken), RATELIMIT_REDIS_URL: redis.url },
        reportUnexpectedExit: false,
      });
      expect((await proc.exited).code).toBe(1);
      expect(proc.logs()).toContain('"event_type":"startup_failed"');
    } finally {
      blocker.close();
    }
  });

  it('serves health, status and metrics, and exits 0 on SIGTERM', async () => {
    const [grpcPort, adminPort, xdsPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const proc = spawnProcess({
      name: 'ratelimit-service',
      command: tsx,
      args: [main],
      env: {
        ...process.env,
        RATELIMIT_GRPC_PORT: String(grpcPort),
        RATELIMIT_ADMIN_PORT: String(adminPort),
        // Nothing listens there: the service runs without a policy, not ready.
        RATELIMIT_XDS_ADDRESS: `127.0.0.1:${xdsPort}`,
        RATELIMIT_REDIS_URL: redis.url,
      },
      reportUnexpectedExit: false,
    });
    try {
      await proc.waitForHttp(`http://127.0.0.1:${adminPort}/healthz`, 30_000);
      await proc.waitForPort(grpcPort, 5_000);
      const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      expect(ready.status).toBe(503);
      const status = await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json();
      expect(status).toMatchObject({ policy_version: null, redis_failure_mode: 'allow' });
      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      expect(metrics).toContain('sekisho_ratelimit_decisions_total');
      expect(metrics).toMatch(/sekisho_ratelimit_redis_up\{[^}]*\} 1/);
      proc.signal('SIGTERM');
      const exit = await proc.exited;
      expect(exit.code).toBe(0);
      const events = proc
        .logs()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line).event_type);
      expect(events).toContain('shutdown_complete');
    } finally {
      await proc.stop();
    }
  }, 60_000);

  it("runs on configuration files alone: no control plane, ready, limiting the files' domains", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ratelimit-main-'));
    await writeFile(
      join(dir, 'edge.yaml'),
      'domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n',
    );
    const [grpcPort, adminPort] = await Promise.all([freePort(), freePort()]);
    const proc = spawnProcess({
      name: 'ratelimit-service',
      command: tsx,
      args: [main],
      env: {
        ...process.env,
        RATELIMIT_GRPC_PORT: String(grpcPort),
        RATELIMIT_ADMIN_PORT: String(adminPort),
        RATELIMIT_CONFIG_DIR: dir,
        RATELIMIT_REDIS_URL: redis.url,
      },
      reportUnexpectedExit: false,
    });
    const client = new RateLimitServiceClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure());
    const call = (ip: string) =>
      new Promise<RateLimitResponse>((resolve, reject) =>
        client.shouldRateLimit(
          RateLimitRequest.fromPartial({
            domain: 'edge',
            descriptors: [{ entries: [{ key: 'remote_address', value: ip }] }],
          }),
          (error, response) => (error ? reject(error) : resolve(response)),
        ),
      );
    try {
      await proc.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 30_000);
      const status = await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json();
      expect(status).toMatchObject({ control_plane: null, config_dir: { domains: [{ domain: 'edge' }] } });
      // A fresh IP per run: the Redis may be shared (REDIS_URL).
      const ip = `192.0.2.${Math.floor(Math.random() * 250) + 1}:${Date.now()}`;
      expect((await call(ip)).overallCode).toBe(Code.OK);
      expect((await call(ip)).overallCode).toBe(Code.OVER_LIMIT);
      proc.signal('SIGTERM');
      expect((await proc.exited).code).toBe(0);
    } finally {
      client.close();
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
