import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { freePort, type ManagedProcess, spawnProcess } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import {
  RateLimitResponse_Code as Code,
  RateLimitRequest,
  type RateLimitResponse,
  RateLimitServiceClient,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

// SEKISHO_WORKERS=2 as an operator runs it: real processes (a node:cluster primary and two
// workers), the shared gRPC port and the primary's admin port over real sockets, a real Redis.

const main = fileURLToPath(new URL('./main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));

let redis: RedisHandle;
let dir: string;
beforeAll(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'ratelimit-workers-'));
  await writeFile(
    join(dir, 'edge.yaml'),
    'domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: hour, requests_per_unit: 1000 }\n',
  );
});
afterAll(async () => {
  await redis?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const clients: RateLimitServiceClient[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

/** A client on a connection of its own (grpc-js would otherwise share one between clients). */
function connect(grpcPort: number): RateLimitServiceClient {
  const client = new RateLimitServiceClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1,
  });
  clients.push(client);
  return client;
}

const call = (client: RateLimitServiceClient, ip: string) =>
  new Promise<RateLimitResponse>((resolve, reject) =>
    client.shouldRateLimit(
      RateLimitRequest.fromPartial({
        domain: 'edge',
        descriptors: [{ entries: [{ key: 'remote_address', value: ip }] }],
      }),
      (error, response) => (error ? reject(error) : resolve(response)),
    ),
  );

async function startWorkers(env: Record<string, string> = {}) {
  const [grpcPort, adminPort] = await Promise.all([freePort(), freePort()]);
  const proc = spawnProcess({
    name: 'ratelimit-service',
    command: tsx,
    args: [main],
    env: {
      ...process.env,
      SEKISHO_WORKERS: '2',
      RATELIMIT_GRPC_PORT: String(grpcPort),
      RATELIMIT_ADMIN_PORT: String(adminPort),
      RATELIMIT_CONFIG_DIR: dir,
      RATELIMIT_REDIS_URL: redis.url,
      ...env,
    },
    reportUnexpectedExit: false,
  });
  const admin = (path: string) => fetch(`http://127.0.0.1:${adminPort}${path}`);
  await proc.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 60_000);
  return { proc, grpcPort, admin };
}

interface Status {
  workers: {
    index: number;
    pid: number | null;
    alive: boolean;
    restarts: number;
    status: { worker_processes: number };
  }[];
  local_limit_divisor: number;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const metricValue = (text: string, line: RegExp) =>
  text
    .split('\n')
    .filter((l) => line.test(l))
    .map((l) => Number(l.split(' ').at(-1)));

describe('SEKISHO_WORKERS=2', () => {
  let running: ManagedProcess | undefined;
  afterEach(async () => {
    await running?.stop();
    running = undefined;
  });

  it('serves the port from two processes, aggregates readiness, status and metrics, and replaces a killed worker', async () => {
    const { proc, grpcPort, admin } = await startWorkers();
    running = proc;

    const status = (await (await admin('/status')).json()) as Status;
    const pids = status.workers.map((w) => w.pid);
    expect(pids).toHaveLength(2);
    expect(new Set(pids).size).toBe(2);
    expect(pids).not.toContain(proc.pid);
    // Each worker divides local-mode limits by replicas (1) × workers (2).
    expect(status.workers.map((w) => w.status.worker_processes)).toEqual([2, 2]);
    expect(status.local_limit_divisor).toBe(2);
    expect(await (await admin('/healthz')).json()).toEqual({ status: 'ok', workers: 2, workers_alive: 2 });

    // Two connections: the primary hands them to the workers in turn.
    const ip = `198.51.100.${Math.floor(Math.random() * 250) + 1}:${Date.now()}`;
    const [a, b] = [connect(grpcPort), connect(grpcPort)];
    for (let i = 0; i < 3; i++) expect((await call(a, ip)).overallCode).toBe(Code.OK);
    for (let i = 0; i < 2; i++) expect((await call(b, ip)).overallCode).toBe(Code.OK);

    const metrics = await (await admin('/metrics')).text();
    // Histograms and counters summed over the workers; one-process facts taken once.
    expect(metricValue(metrics, /^sekisho_ratelimit_total_hits_total\{domain="edge"/)).toEqual([5]);
    expect(metricValue(metrics, /^nodejs_version_info\{/)).toEqual([1]);
    expect(metricValue(metrics, /^sekisho_service_workers\{/)).toEqual([2]);
    expect(metricValue(metrics, /^sekisho_ratelimit_redis_up\{/)).toEqual([1]);
    expect(metricValue(metrics, /^sekisho_ratelimit_config_domain_info\{domain="edge"/)).toEqual([1]);

    // A worker that does not answer (stopped): the replica is neither alive nor ready.
    process.kill(pids[1] as number, 'SIGSTOP');
    try {
      const readyz = await admin('/readyz');
      expect(readyz.status).toBe(503);
      expect(((await readyz.json()) as { workers: unknown }).workers).toEqual([
        { index: 0, ready: true },
        { index: 1, ready: false },
      ]);
      expect(await (await admin('/healthz')).json()).toEqual({ status: 'unhealthy', workers: 2, workers_alive: 1 });
    } finally {
      process.kill(pids[1] as number, 'SIGCONT');
    }
    expect((await admin('/readyz')).status).toBe(200);

    // A worker killed: not every worker is alive until its replacement is.
    const victim = pids[0] as number;
    process.kill(victim, 'SIGKILL');
    await until('the primary to notice', async () => ((await admin('/healthz')).status === 503 ? true : undefined));
    // The port keeps answering meanwhile: the other worker takes new connections.
    expect((await call(connect(grpcPort), ip)).overallCode).toBe(Code.OK);

    const replaced = await until('a replacement worker', async () => {
      if ((await admin('/readyz')).status !== 200) return undefined;
      return (await (await admin('/status')).json()) as Status;
    });
    expect(replaced.workers[0]?.pid).not.toBe(victim);
    expect(replaced.workers[0]?.restarts).toBe(1);
    expect(replaced.workers[1]?.pid).toBe(pids[1]);
    expect(metricValue(await (await admin('/metrics')).text(), /^sekisho_service_worker_restarts_total\{/)).toEqual([
      1,
    ]);
    expect(proc.logs()).toContain('"event_type":"worker_exited"');
    expect((await call(connect(grpcPort), ip)).overallCode).toBe(Code.OK);

    // To the whole process group, as Ctrl-C does: the workers hear it and the primary's message.
    proc.signal('SIGTERM');
    expect((await proc.exited).code).toBe(0);
  }, 120_000);

  it('drains every worker on SIGTERM: calls in flight on both complete, then the primary exits 0', async () => {
    const { proc, grpcPort, admin } = await startWorkers({ RATELIMIT_REDIS_TIMEOUT: '10s' });
    running = proc;
    const ip = `203.0.113.${Math.floor(Math.random() * 250) + 1}:${Date.now()}`;
    const [a, b] = [connect(grpcPort), connect(grpcPort)];
    // Connected (and handed to a worker each) before Redis is held.
    await Promise.all([call(a, ip), call(b, ip)]);

    // Redis holds every command for 2 s: the next calls wait in the workers for their answer.
    const control = new Redis(redis.url);
    try {
      await control.call('CLIENT', 'PAUSE', '2000', 'ALL');
    } finally {
      control.disconnect();
    }
    const inFlight = [call(a, ip), call(a, ip), call(b, ip), call(b, ip)];
    await new Promise((resolve) => setTimeout(resolve, 300));
    // To the primary only, as Kubernetes does (tsx passes it on to the node process it runs).
    process.kill(proc.pid, 'SIGTERM');
    // Readiness goes at once; the in-flight calls are still answered.
    await until('readiness off', async () => ((await admin('/readyz')).status === 503 ? true : undefined), 1_500);
    const answers = await Promise.all(inFlight);
    expect(answers.map((r) => r.overallCode)).toEqual([Code.OK, Code.OK, Code.OK, Code.OK]);
    expect((await proc.exited).code).toBe(0);
    const workersStopped = proc
      .logs()
      .split('\n')
      .filter((line) => line.includes('"event_type":"shutdown_complete"') && line.includes('"worker":'));
    expect(workersStopped).toHaveLength(2);
  }, 120_000);
});
