import type { Logger } from './logger';

export interface ShutdownStep {
  name: string;
  run: () => Promise<void>;
}

/**
 * On SIGINT/SIGTERM: runs the steps in order (stop accepting, drain, close
 * dependencies) and exits 0. A second signal, or a step that hangs past the
 * deadline, exits 1 so an orchestrator is never left waiting.
 */
export function installShutdown(logger: Logger, steps: ShutdownStep[], deadlineMs = 15_000): void {
  let stopping = false;
  const onSignal = async (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ category: 'technical', event_type: 'shutdown_forced', signal }, 'second signal, exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ category: 'technical', event_type: 'shutdown_started', signal }, 'shutting down');
    const deadline = setTimeout(() => {
      logger.error({ category: 'technical', event_type: 'shutdown_timeout' }, 'shutdown deadline passed, exiting');
      process.exit(1);
    }, deadlineMs);
    deadline.unref();
    for (const step of steps) {
      try {
        await step.run();
      } catch (error) {
        logger.error(
          { category: 'technical', event_type: 'shutdown_step_failed', step: step.name, error_details: String(error) },
          'shutdown step failed',
        );
      }
    }
    logger.info({ category: 'technical', event_type: 'shutdown_complete' }, 'stopped');
    logger.flush?.();
    process.exit(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
