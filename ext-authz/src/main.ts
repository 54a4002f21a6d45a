import { ConfigError } from '@sekisho/service-kit/config';
import { createLogger, maskPII } from '@sekisho/service-kit/logger';
import { installShutdown } from '@sekisho/service-kit/shutdown';
import { startExtAuthzApp } from './app';
import { type ExtAuthzConfig, loadExtAuthzConfig } from './config';

// npx tsx ext-authz/src/main.ts
let config: ExtAuthzConfig;
try {
  config = loadExtAuthzConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`ext-authz: ${error.message}\n`);
  process.exit(2);
}

const logger = createLogger('ext-authz', { level: config.LOG_LEVEL });
try {
  const app = await startExtAuthzApp(config, { logger });
  installShutdown(logger, app.shutdownSteps);
} catch (error) {
  // A port in use and the like: one JSON record saying why, then a non-zero exit.
  logger.fatal(
    { category: 'technical', event_type: 'startup_failed', error_details: maskPII(String(error)) },
    'ext-authz could not start',
  );
  process.exit(1);
}
