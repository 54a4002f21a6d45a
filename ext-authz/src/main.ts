import { runService } from '@sekisho/service-kit/run-service';
import { startExtAuthzApp } from './app';
import { loadExtAuthzConfig } from './config';

// npx tsx ext-authz/src/main.ts
await runService({
  name: 'ext-authz',
  loadConfig: loadExtAuthzConfig,
  start: (config, logger) => startExtAuthzApp(config, { logger }),
});
