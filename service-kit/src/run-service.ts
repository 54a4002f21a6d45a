import { ConfigError } from './config';
import { createLogger, type Logger, maskPII } from './logger';
import { installShutdown, type ShutdownStep } from './shutdown';

export interface RunServiceOptions<C extends { LOG_LEVEL: string }> {
  /** The name in every log record and in the one-line errors on stderr. */
  name: string;
  loadConfig: () => C;
  /** Starts everything; what it returns is stopped, in order, on SIGINT/SIGTERM. */
  start: (config: C, logger: Logger) => Promise<{ shutdownSteps: ShutdownStep[] }>;
  /** Errors that are the operator's input, not a crash: printed as their message on stderr, exit 1. */
  isUsageError?: (error: unknown) => boolean;
}

/**
 * The life of a service process, the same for all of them: configuration from the
 * environment (a bad variable: one line naming it, exit 2), start (a failure: one
 * fatal JSON record, exit 1), then graceful shutdown on a signal (exit 0).
 */
export async function runService<C extends { LOG_LEVEL: string }>(opts: RunServiceOptions<C>): Promise<void> {
  let config: C;
  try {
    config = opts.loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${opts.name}: ${error.message}\n`);
    process.exit(2);
  }
  const logger = createLogger(opts.name, { level: config.LOG_LEVEL });
  try {
    const started = await opts.start(config, logger);
    installShutdown(logger, started.shutdownSteps);
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
