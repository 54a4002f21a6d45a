import { runService } from '@sekisho/service-kit/run-service';
import { loadExtAuthzConfig } from './config';

// npx tsx ext-authz/src/main.ts
await runService({
  name: 'ext-authz',
  // SEKISHO_WORKERS > 1: that many processes share the gRPC port; the primary serves the admin port.
  admin: (config) => ({ host: config.EXT_AUTHZ_HOST, port: config.EXT_AUTHZ_ADMIN_PORT }),
  loadConfig: loadExtAuthzConfig,
  // Loaded only where it runs: a primary of several workers never starts the service itself.
  start: async (config, logger) => (await import('./app')).startExtAuthzApp(config, { logger }),
});
