import { runService } from '@sekisho/service-kit/run-service';
import { startThreatDetectorApp } from './app';
import { loadThreatDetectorConfig } from './config';

// npx tsx threat-detector/src/main.ts
await runService({
  name: 'threat-detector',
  loadConfig: loadThreatDetectorConfig,
  start: (config, logger) => startThreatDetectorApp(config, { logger }),
});
