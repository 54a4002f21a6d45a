import { runService } from '@sekisho/service-kit/run-service';
import { startRateLimitApp } from './app';
import { loadRateLimitConfig } from './config';

// npx tsx ratelimit-service/src/main.ts
await runService({
  name: 'ratelimit-service',
  loadConfig: loadRateLimitConfig,
  start: (config, logger) => startRateLimitApp(config, { logger }),
});
