import { ConfigError } from '@sekisho/service-kit/config';
import { createLogger } from '@sekisho/service-kit/logger';
import { installShutdown } from '@sekisho/service-kit/shutdown';
import { type DemoUpstreamConfig, loadDemoUpstreamConfig } from './config';
import { startDemoUpstream } from './server';

// npx tsx demo-upstream/src/main.ts — one demo upstream as its own process (manual runs and
// k8s; the devstack starts its demo upstreams in-process instead).

let config: DemoUpstreamConfig;
try {
  config = loadDemoUpstreamConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`demo-upstream: ${error.message}\n`);
  process.exit(2);
}

const logger = createLogger('demo-upstream', { level: config.LOG_LEVEL });
const upstream = await startDemoUpstream({
  name: config.DEMO_UPSTREAM_NAME,
  host: config.DEMO_UPSTREAM_HOST,
  port: config.DEMO_UPSTREAM_PORT,
  logger,
}).catch((error: unknown) => {
  // A port in use: one record and exit 1, not an unhandled rejection.
  logger.fatal(
    {
      category: 'technical',
      event_type: 'startup_failed',
      error_details: error instanceof Error ? error.message : String(error),
    },
    'demo upstream could not start',
  );
  process.exit(1);
});
logger.info(
  { category: 'technical', event_type: 'started', upstream_service: config.DEMO_UPSTREAM_NAME, url: upstream.url },
  'demo upstream listening',
);
installShutdown(logger, [{ name: 'http server', run: () => upstream.close() }]);
