import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startAdminServer } from '@sekisho/service-kit/admin-server';
import type { Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { runService } from '@sekisho/service-kit/run-service';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import type { Registry } from 'prom-client';
import { type InjectorConfig, loadInjectorConfig } from './config';
import { createInjectorMetrics } from './metrics';
import { startWebhookServer } from './server';

// The injector process: the webhook on HTTPS, the admin port for probes and metrics.
// Run with `npx tsx injector/src/main.ts`.

export async function startInjector(config: InjectorConfig, deps: { logger: Logger; registry: Registry }) {
  const metrics = createInjectorMetrics(deps.registry);
  const webhook = await startWebhookServer(config, { logger: deps.logger, metrics });
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  try {
    admin = await startAdminServer({
      host: config.INJECTOR_HOST,
      port: config.INJECTOR_ADMIN_PORT,
      registry: deps.registry,
      logger: deps.logger,
      isReady: () => true,
      status: () => ({
        service: 'injector',
        sidecarMode: config.INJECTOR_SIDECAR_MODE,
        proxyImage: config.INJECTOR_PROXY_IMAGE,
        xdsAddress: config.INJECTOR_XDS_ADDRESS,
        xdsIdentity: config.INJECTOR_XDS_IDENTITY,
      }),
    });
  } catch (error) {
    await webhook.close();
    throw error;
  }
  const shutdownSteps: ShutdownStep[] = [
    { name: 'close webhook server', run: () => webhook.close() },
    { name: 'close admin server', run: () => admin.close() },
  ];
  return {
    webhookPort: webhook.port,
    adminPort: admin.port,
    shutdownSteps,
    close: async () => {
      for (const step of shutdownSteps) await step.run();
    },
  };
}

const isMain = (() => {
  try {
    return (
      process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
    );
  } catch {
    return false;
  }
})();

if (isMain) {
  await runService({
    name: 'injector',
    loadConfig: () => loadInjectorConfig(),
    start: (config, logger) => startInjector(config, { logger, registry: createMetricsRegistry('injector') }),
    isUsageError: (error) => error instanceof Error && /^INJECTOR_(TLS_|XDS_CA_FILE)/.test(error.message),
  });
}
