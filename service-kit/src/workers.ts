import cluster, { type Worker } from 'node:cluster';
import Fastify from 'fastify';
import { AggregatorRegistry, Counter, Gauge, type Registry } from 'prom-client';
import { ConfigError } from './config';
import type { Logger } from './logger';
import { createMetricsRegistry } from './metrics';

// Several processes of one service sharing its gRPC port (SEKISHO_WORKERS): node:cluster's
// primary forks the workers, hands each accepted connection to one of them in turn, and serves
// the admin port itself, asking the workers over IPC. One worker (the default) is no cluster at
// all: the process serves everything itself, as it always did.

export const workersVariable = 'SEKISHO_WORKERS';
const indexVariable = 'SEKISHO_WORKER_INDEX';
/** More processes than this is a typo, not a deployment: a pod gets a few cores. */
const maxWorkers = 64;

/** SEKISHO_WORKERS: a whole number 1–64, 1 when unset or empty; anything else is a ConfigError naming it. */
export function workerCountFrom(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[workersVariable];
  if (raw === undefined || raw === '') return 1;
  const count = /^\d{1,3}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(count >= 1 && count <= maxWorkers)) {
    throw new ConfigError([
      {
        variable: workersVariable,
        message: `expected a whole number from 1 to ${maxWorkers}, got ${JSON.stringify(raw)}`,
      },
    ]);
  }
  return count;
}

/** This process's place among the workers: undefined for a process that is not one (SEKISHO_WORKERS=1). */
export function currentWorker(env: NodeJS.ProcessEnv = process.env): { index: number; count: number } | undefined {
  if (!cluster.isWorker || env[indexVariable] === undefined) return undefined;
  return { index: Number(env[indexVariable]), count: workerCountFrom(env) };
}

/** How many processes share this service's traffic in this replica (1 without workers). */
export const processesPerReplica = (env: NodeJS.ProcessEnv = process.env): number => currentWorker(env)?.count ?? 1;

// --- IPC between the primary and a worker ----------------------------------------------------

type AdminOp = 'ping' | 'ready' | 'status' | 'metrics';
interface AdminRequest {
  type: 'sekisho:admin';
  id: number;
  op: AdminOp;
}
interface AdminReply {
  type: 'sekisho:admin-reply';
  id: number;
  body: unknown;
}
const shutdownMessage = { type: 'sekisho:shutdown' } as const;

const isAdminRequest = (m: unknown): m is AdminRequest =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === 'sekisho:admin';
const isAdminReply = (m: unknown): m is AdminReply =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === 'sekisho:admin-reply';
export const isShutdownMessage = (m: unknown): boolean =>
  typeof m === 'object' && m !== null && (m as { type?: unknown }).type === shutdownMessage.type;

/**
 * A worker's side of the admin port: answers the primary's questions with what its own admin
 * server would have served (startAdminServer calls this instead of listening in a worker).
 */
export function answerAdminOverIpc(opts: {
  registry: Registry;
  isReady: () => boolean;
  readyDetails?: () => Record<string, unknown>;
  status: () => Record<string, unknown>;
}): { close(): void } {
  const onMessage = async (message: unknown) => {
    if (!isAdminRequest(message)) return;
    let body: unknown;
    try {
      if (message.op === 'ping') body = { pid: process.pid };
      else if (message.op === 'ready') body = { ready: opts.isReady(), details: opts.readyDetails?.() };
      else if (message.op === 'status') body = opts.status();
      else body = await opts.registry.getMetricsAsJSON();
    } catch (error) {
      body = { error: error instanceof Error ? error.message : String(error) };
    }
    if (process.connected) process.send?.({ type: 'sekisho:admin-reply', id: message.id, body } satisfies AdminReply);
  };
  process.on('message', onMessage);
  return { close: () => process.off('message', onMessage) };
}

// --- the primary --------------------------------------------------------------------------

export interface PrimaryOptions {
  name: string;
  workers: number;
  logger: Logger;
  admin: { host?: string; port: number };
  /** A worker that dies is replaced after this, doubling per death in a row up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A worker that has run this long resets its slot's back-off. */
  stableAfterMs?: number;
  /** How long a worker may take to answer an admin question before it counts as not answering. */
  askTimeoutMs?: number;
  /** After SIGTERM, workers still running after this are killed and the primary exits 1. */
  drainDeadlineMs?: number;
  exit?: (code: number) => void;
}

interface Slot {
  index: number;
  worker: Worker | undefined;
  startedAt: number;
  /** Deaths in a row (reset once a worker has run stableAfterMs): the back-off's exponent. */
  failures: number;
  restarts: number;
  timer: NodeJS.Timeout | undefined;
}

export interface Primary {
  adminPort: number;
  /** The workers' pids, by index (undefined while a slot waits to be refilled). */
  pids(): (number | undefined)[];
  stop(): Promise<number>;
}

/**
 * Runs the cluster primary: forks `workers` copies of this program (the same argv and node
 * flags, SEKISHO_WORKER_INDEX set), replaces one that dies, serves the admin port over the
 * workers, and drains them all on SIGINT/SIGTERM.
 */
export async function runPrimary(opts: PrimaryOptions): Promise<Primary> {
  const { logger } = opts;
  const minBackoff = opts.minBackoffMs ?? 250;
  const maxBackoff = opts.maxBackoffMs ?? 10_000;
  const stableAfter = opts.stableAfterMs ?? 30_000;
  // Under the probes' 2 s timeout (k8s/base), so a stuck worker is a 503, not a probe timeout.
  const askTimeout = opts.askTimeoutMs ?? 1_000;
  const exit = opts.exit ?? ((code: number) => process.exit(code));

  const registry = createMetricsRegistry(opts.name);
  const restartsTotal = new Counter({
    name: 'sekisho_service_worker_restarts_total',
    help: 'Worker processes that died and were replaced (SEKISHO_WORKERS > 1).',
    registers: [registry],
  });
  new Gauge({
    name: 'sekisho_service_workers',
    help: 'Worker processes this replica runs (SEKISHO_WORKERS).',
    registers: [registry],
  }).set(opts.workers);
  new Gauge({
    name: 'sekisho_service_workers_alive',
    help: 'Worker processes running now.',
    registers: [registry],
    collect() {
      this.set(slots.filter((s) => s.worker?.isConnected()).length);
    },
  });

  let stopping = false;
  let nextId = 0;
  const pending = new Map<number, (body: unknown) => void>();
  const slots: Slot[] = Array.from({ length: opts.workers }, (_, index) => ({
    index,
    worker: undefined,
    startedAt: 0,
    failures: 0,
    restarts: 0,
    timer: undefined,
  }));

  const onReply = (message: unknown) => {
    if (!isAdminReply(message)) return;
    pending.get(message.id)?.(message.body);
    pending.delete(message.id);
  };

  const fork = (slot: Slot) => {
    slot.timer = undefined;
    if (stopping) return;
    const worker = cluster.fork({ [workersVariable]: String(opts.workers), [indexVariable]: String(slot.index) });
    slot.worker = worker;
    slot.startedAt = Date.now();
    worker.on('message', onReply);
    worker.on('exit', (code, signal) => {
      if (slot.worker === worker) slot.worker = undefined;
      if (stopping) return;
      const ranMs = Date.now() - slot.startedAt;
      slot.failures = ranMs >= stableAfter ? 1 : slot.failures + 1;
      const delay = Math.min(maxBackoff, minBackoff * 2 ** (slot.failures - 1));
      slot.restarts++;
      restartsTotal.inc();
      logger.error(
        {
          category: 'technical',
          event_type: 'worker_exited',
          worker: slot.index,
          pid: worker.process.pid,
          exit_code: code,
          signal,
          ran_ms: ranMs,
          restart_in_ms: delay,
        },
        `worker ${slot.index} exited; replacing it in ${delay} ms`,
      );
      slot.timer = setTimeout(() => fork(slot), delay);
    });
  };

  /** One worker's answer, or undefined when it is gone or does not answer in time. */
  const ask = (slot: Slot, op: AdminOp): Promise<unknown> => {
    const worker = slot.worker;
    if (!worker?.isConnected()) return Promise.resolve(undefined);
    const id = nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        resolve(undefined);
      }, askTimeout);
      pending.set(id, (body) => {
        clearTimeout(timer);
        resolve(body);
      });
      try {
        worker.send({ type: 'sekisho:admin', id, op } satisfies AdminRequest);
      } catch {
        clearTimeout(timer);
        pending.delete(id);
        resolve(undefined);
      }
    });
  };
  const askAll = (op: AdminOp) => Promise.all(slots.map((slot) => ask(slot, op)));

  const app = Fastify({ logger: false });
  app.get('/healthz', async (_request, reply) => {
    const answers = await askAll('ping');
    const alive = answers.filter((a) => a !== undefined).length;
    const ok = alive === slots.length;
    return reply
      .code(ok ? 200 : 503)
      .send({ status: ok ? 'ok' : 'unhealthy', workers: slots.length, workers_alive: alive });
  });
  app.get('/readyz', async (_request, reply) => {
    const answers = (await askAll('ready')) as ({ ready?: boolean; details?: Record<string, unknown> } | undefined)[];
    const ready = !stopping && answers.every((a) => a?.ready === true);
    const details = answers.find((a) => a?.details)?.details;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not ready',
      ...(details ? { details } : {}),
      workers: answers.map((a, index) => ({ index, ready: a?.ready === true })),
    });
  });
  app.get('/metrics', async (_request, reply) => {
    const answers = await askAll('metrics');
    const perWorker = answers.filter((a): a is ProcessMetrics => Array.isArray(a));
    const text = await aggregateWorkerMetrics([await registry.getMetricsAsJSON(), ...perWorker]);
    return reply.header('content-type', registry.contentType).send(text);
  });
  app.get('/status', async () => {
    const answers = (await askAll('status')) as (Record<string, unknown> | undefined)[];
    const first = answers.find((a) => a !== undefined) ?? {};
    return {
      ...first,
      draining: stopping || first.draining === true,
      workers: slots.map((slot, index) => ({
        index,
        pid: slot.worker?.process.pid ?? null,
        alive: answers[index] !== undefined,
        restarts: slot.restarts,
        status: answers[index] ?? null,
      })),
    };
  });
  await app.listen({ host: opts.admin.host ?? '127.0.0.1', port: opts.admin.port });
  const address = app.server.address();
  const adminPort = typeof address === 'object' && address ? address.port : opts.admin.port;

  for (const slot of slots) fork(slot);
  logger.info(
    { category: 'technical', event_type: 'workers_started', workers: opts.workers, admin_port: adminPort },
    `${opts.name}: primary ${process.pid} running ${opts.workers} workers`,
  );

  // Drain: every worker runs its own shutdown (readiness off, gRPC drained, dependencies
  // closed) on the primary's message; the primary waits for all of them, then closes its port.
  let stopped: Promise<number> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping = true;
      const running = slots.flatMap((slot) => {
        if (slot.timer) clearTimeout(slot.timer);
        const worker = slot.worker;
        if (!worker || worker.isDead()) return [];
        const exited = new Promise<number>((resolve) =>
          worker.once('exit', (code, signal) => resolve(signal ? 1 : (code ?? 1))),
        );
        if (worker.isConnected()) worker.send(shutdownMessage);
        else worker.process.kill('SIGTERM');
        return [exited];
      });
      const deadline = opts.drainDeadlineMs ?? 20_000;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), deadline);
      });
      const codes = await Promise.race([Promise.all(running), timedOut]);
      clearTimeout(timer);
      let code = 0;
      if (codes === 'timeout') {
        logger.error({ category: 'technical', event_type: 'shutdown_timeout' }, 'workers still running; killing them');
        for (const slot of slots) slot.worker?.process.kill('SIGKILL');
        code = 1;
      } else if (codes.some((c) => c !== 0)) code = 1;
      await app.close();
      return code;
    })();
    return stopped;
  };

  let signalledAt: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    // A repeat within a second is the same stop delivered twice (Ctrl-C reaches the whole
    // process group, and wrappers such as npm or tsx pass it on as well), not an impatient operator.
    if (signalledAt !== undefined && Date.now() - signalledAt < 1_000) return;
    if (signalledAt !== undefined) {
      logger.warn({ category: 'technical', event_type: 'shutdown_forced', signal }, 'second signal, exiting now');
      for (const slot of slots) slot.worker?.process.kill('SIGKILL');
      exit(1);
      return;
    }
    signalledAt = Date.now();
    logger.info({ category: 'technical', event_type: 'shutdown_started', signal }, 'shutting down the workers');
    void stop().then((code) => {
      logger.info({ category: 'technical', event_type: 'shutdown_complete', exit_code: code }, 'stopped');
      logger.flush?.();
      exit(code);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  return { adminPort, pids: () => slots.map((s) => s.worker?.process.pid), stop };
}

/**
 * The workers' registries as one (prom-client's AggregatorRegistry): each metric combined by
 * its `aggregator` (counters and histograms summed by default; see the services' gauges).
 */
export async function aggregateWorkerMetrics(perProcess: ProcessMetrics[]): Promise<string> {
  return AggregatorRegistry.aggregate(perProcess).metrics();
}

/** One process's `registry.getMetricsAsJSON()`. */
export type ProcessMetrics = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
