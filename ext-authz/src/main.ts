import { ConfigError } from '@sekisho/service-kit/config';
import { createLogger } from '@sekisho/service-kit/logger';
import { installShutdown } from '@sekisho/service-kit/shutdown';
import { startExtAuthzApp } from './app';
import { loadExtAuthzConfig } from './config';

// npx tsx ext-authz/src/main.ts
try {
  const config = loadExtAuthzConfig();
  const logger = createLogger('ext-authz', { level: config.LOG_LEVEL });
  const app = await startExtAuthzApp(config, { logger });
  installShutdown(logger, app.shutdownSteps);
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`ext-authz: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
}
