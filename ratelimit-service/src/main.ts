import { ConfigError } from '@sekisho/service-kit/config';
import { createLogger } from '@sekisho/service-kit/logger';
import { installShutdown } from '@sekisho/service-kit/shutdown';
import { startRateLimitApp } from './app';
import { loadRateLimitConfig, type RateLimitConfig } from './config';

// npx tsx ratelimit-service/src/main.ts

let config: RateLimitConfig;
try {
  config = loadRateLimitConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`ratelimit-service: ${error.message}\n`);
  process.exit(2);
}

const logger = createLogger('ratelimit-service', { level: config.LOG_LEVEL });
try {
  const app = await startRateLimitApp(config, { logger });
  installShutdown(logger, app.shutdownSteps);
} catch (error) {
  logger.fatal(
    {
      category: 'technical',
      event_type: 'startup_failed',
      error_details: error instanceof Error ? error.message : String(error),
    },
    'rate-limit service could not start',
  );
  process.exit(1);
}
