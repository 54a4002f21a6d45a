import { runService } from '@sekisho/service-kit/run-service';
import { loadRateLimitConfig } from './config';

// npx tsx ratelimit-service/src/main.ts
await runService({
  name: 'ratelimit-service',
  // SEKISHO_WORKERS > 1: that many processes share the gRPC port; the primary serves the admin port.
  admin: (config) => ({ host: config.RATELIMIT_HOST, port: config.RATELIMIT_ADMIN_PORT }),
  loadConfig: loadRateLimitConfig,
  // Loaded only where it runs: a primary of several workers never starts the service itself.
  start: async (config, logger) => (await import('./app')).startRateLimitApp(config, { logger }),
});
