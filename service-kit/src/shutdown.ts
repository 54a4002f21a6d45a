import type { Logger } from './logger';

export interface ShutdownStep {
  name: string;
  run: () => Promise<void>;
}

export interface ShutdownOptions {
  /** A step still running after this long makes the process exit 1. Default 15 s. */
  deadlineMs?: number;
  /** Where SIGINT/SIGTERM come from and how the process ends; the process itself unless a test says otherwise. */
  signals?: { on(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown };
  exit?: (code: number) => void;
}

/**
 * On SIGINT/SIGTERM: runs the steps in order (stop accepting, drain, close
 * dependencies) and exits 0. A step that fails is logged and the next one still
 * runs. A second signal, or a step that hangs past the deadline, exits 1 at once
 * so an orchestrator is never left waiting.
 */
export function installShutdown(
  logger: Logger,
  steps: ShutdownStep[],
  opts: ShutdownOptions = {},
): { begin(reason: NodeJS.Signals): void } {
  const signals = opts.signals ?? process;
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      logger.warn({ category: 'technical', event_type: 'shutdown_forced', signal }, 'second signal, exiting now');
      exit(1);
      return;
    }
    signalled = true;
    if (!stopping) void stop(signal);
  };
  const stop = async (signal: NodeJS.Signals) => {
    stopping = true;
    logger.info({ category: 'technical', event_type: 'shutdown_started', signal }, 'shutting down');
    const deadline = setTimeout(() => {
      logger.error({ category: 'technical', event_type: 'shutdown_timeout' }, 'shutdown deadline passed, exiting');
      exit(1);
    }, opts.deadlineMs ?? 15_000);
    deadline.unref();
    for (const step of steps) {
      try {
        await step.run();
      } catch (error) {
        logger.error(
          {
            category: 'technical',
            event_type: 'shutdown_step_failed',
            step: step.name,
            error_details: error instanceof Error ? error.message : String(error),
          },
          'shutdown step failed',
        );
      }
    }
    clearTimeout(deadline);
    logger.info({ category: 'technical', event_type: 'shutdown_complete' }, 'stopped');
    logger.flush?.();
    exit(0);
  };
  signals.on('SIGINT', onSignal);
  signals.on('SIGTERM', onSignal);
  // For a worker told to stop by its primary (or left by it): the same steps. It is not a
  // signal, so the signal Ctrl-C sends the worker too is not taken for a second one.
  return {
    begin: (reason) => {
      if (!stopping) void stop(reason);
    },
  };
}
