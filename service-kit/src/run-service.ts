import { ConfigError } from './config';
import { createLogger, type Logger, maskPII } from './logger';
import { installShutdown, type ShutdownStep } from './shutdown';
import { currentWorker, isShutdownMessage, runPrimary, workerCountFrom } from './workers';

export interface RunServiceOptions<C extends { LOG_LEVEL: string }> {
  /** The name in every log record and in the one-line errors on stderr. */
  name: string;
  loadConfig: () => C;
  /** Starts everything; what it returns is stopped, in order, on SIGINT/SIGTERM. */
  start: (config: C, logger: Logger) => Promise<{ shutdownSteps: ShutdownStep[] }>;
  /** Errors that are the operator's input, not a crash: printed as their message on stderr, exit 1. */
  isUsageError?: (error: unknown) => boolean;
  /**
   * Where the admin port is: given, the service may run several worker processes sharing its
   * gRPC port (SEKISHO_WORKERS); the primary then serves this port over all of them. Omitted,
   * the service is always one process (SEKISHO_WORKERS other than 1 is refused).
   */
  admin?: (config: C) => { host?: string; port: number };
}

/**
 * The life of a service process, the same for all of them: configuration from the
 * environment (a bad variable: one line naming it, exit 2), start (a failure: one
 * fatal JSON record, exit 1), then graceful shutdown on a signal (exit 0).
 */
export async function runService<C extends { LOG_LEVEL: string }>(opts: RunServiceOptions<C>): Promise<void> {
  let config: C;
  let workers: number;
  try {
    config = opts.loadConfig();
    workers = workerCountFrom();
    if (workers > 1 && !opts.admin)
      throw new ConfigError([{ variable: 'SEKISHO_WORKERS', message: `${opts.name} runs as one process only` }]);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${opts.name}: ${error.message}\n`);
    process.exit(2);
  }
  const worker = currentWorker();
  const baseLogger = createLogger(opts.name, { level: config.LOG_LEVEL });
  const logger = worker ? baseLogger.child({ worker: worker.index }) : baseLogger;
  try {
    if (workers > 1 && !worker && opts.admin) {
      await runPrimary({ name: opts.name, workers, logger, admin: opts.admin(config) });
      return;
    }
    // A worker told to stop by the primary, or left by it (killed), drains as on a signal;
    // a request that comes while it is still starting is kept for when it has started.
    let stopRequested = false;
    let begin = () => {
      stopRequested = true;
    };
    if (worker) {
      process.on('message', (message) => {
        if (isShutdownMessage(message)) begin();
      });
      process.on('disconnect', () => begin());
    }
    const started = await opts.start(config, logger);
    const shutdown = installShutdown(logger, started.shutdownSteps);
    begin = () => shutdown.begin('SIGTERM');
    if (stopRequested) begin();
  } catch (error) {
    if (opts.isUsageError?.(error)) {
      process.stderr.write(`${opts.name}: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    }
    logger.fatal(
      { category: 'technical', event_type: 'startup_failed', error_details: maskPII(String(error)) },
      `${opts.name} could not start`,
    );
    logger.flush?.();
    process.exit(1);
  }
}
