import { runService } from '@sekisho/service-kit/run-service';
import { loadDemoUpstreamConfig } from './config';
import { startDemoUpstream } from './server';

// npx tsx demo-upstream/src/main.ts — one demo upstream as its own process (manual runs and
// k8s; the devstack starts its demo upstreams in-process instead).
await runService({
  name: 'demo-upstream',
  loadConfig: loadDemoUpstreamConfig,
  start: async (config, logger) => {
    const upstream = await startDemoUpstream({
      name: config.DEMO_UPSTREAM_NAME,
      host: config.DEMO_UPSTREAM_HOST,
      port: config.DEMO_UPSTREAM_PORT,
      logger,
    });
    logger.info(
      { category: 'technical', event_type: 'started', upstream_service: config.DEMO_UPSTREAM_NAME, url: upstream.url },
      'demo upstream listening',
    );
    return { shutdownSteps: [{ name: 'http server', run: () => upstream.close() }] };
  },
});
