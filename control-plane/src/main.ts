import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAdminServer } from '@sekisho/service-kit/admin-server';
import { envLogLevel, envPort, loadConfig } from '@sekisho/service-kit/config';
import { startGrpcServer } from '@sekisho/service-kit/grpc-server';
import type { Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { runService } from '@sekisho/service-kit/run-service';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import type { FieldError } from './definition/load';
import { DefinitionWatcher, type DefinitionWatcherOptions, describeFieldError } from './watch';
import { SnapshotCache } from './xds/cache';
import { createAdsServer } from './xds/server';

// The control plane process: compile the definition, serve it over ADS, recompile
// whenever the file changes. Run with `npx tsx control-plane/src/main.ts`.

export const configSchema = z.object({
  /** The gateway definition file (YAML or TypeScript), relative to the working directory. */
  CONTROL_PLANE_DEFINITION: z.string({ error: 'required: path of the gateway definition file' }).min(1),
  CONTROL_PLANE_HOST: z.string().default('127.0.0.1'),
  CONTROL_PLANE_XDS_PORT: envPort(18000),
  CONTROL_PLANE_ADMIN_PORT: envPort(18001),
  LOG_LEVEL: envLogLevel(),
});

export type ControlPlaneConfig = z.output<typeof configSchema>;

/** The initial definition did not compile; nothing was started. */
export class InvalidDefinitionError extends Error {
  constructor(
    readonly path: string,
    readonly errors: FieldError[],
  ) {
    super(`invalid gateway definition ${path}:\n${errors.map((e) => `  ${describeFieldError(e)}`).join('\n')}`);
    this.name = 'InvalidDefinitionError';
  }
}

export interface ControlPlane {
  xdsPort: number;
  adminPort: number;
  status(): Record<string, unknown>;
  /** In order: stop the watcher, end the ADS streams, close gRPC, close the admin server. */
  shutdownSteps: ShutdownStep[];
  /** Runs shutdownSteps. */
  close(): Promise<void>;
}

export async function startControlPlane(
  config: ControlPlaneConfig,
  deps: {
    logger: Logger;
    registry: Registry;
    cwd?: string;
    /** Watcher tuning, for tests. */
    watcher?: Pick<DefinitionWatcherOptions, 'compile' | 'debounceMs' | 'pollIntervalMs'>;
  },
): Promise<ControlPlane> {
  const { logger, registry } = deps;
  const definitionPath = resolve(deps.cwd ?? process.cwd(), config.CONTROL_PLANE_DEFINITION);
  const cache = new SnapshotCache();
  const watcher = new DefinitionWatcher({ path: definitionPath, cache, logger, registry, ...deps.watcher });

  const initial = await watcher.reload('initial', { quiet: true });
  if (!initial.ok) throw new InvalidDefinitionError(definitionPath, initial.errors);

  const ads = createAdsServer({ cache, logger, registry });
  const grpc = await startGrpcServer({
    host: config.CONTROL_PLANE_HOST,
    port: config.CONTROL_PLANE_XDS_PORT,
    register: (server) => ads.register(server),
  });
  watcher.start();

  const status = () => {
    const w = watcher.status();
    return {
      service: 'control-plane',
      definition: w.path,
      versions: cache.versions(),
      lastReload: w.lastReload,
      lastGoodAt: w.lastGoodAt,
      nodes: ads.status(),
    };
  };
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  try {
    admin = await startAdminServer({
      host: config.CONTROL_PLANE_HOST,
      port: config.CONTROL_PLANE_ADMIN_PORT,
      registry,
      logger,
      isReady: () => cache.hasSnapshot(),
      status,
    });
  } catch (error) {
    await watcher.stop();
    ads.close();
    await grpc.close(0);
    throw error;
  }

  logger.info(
    {
      category: 'technical',
      event_type: 'control_plane_ready',
      xds_port: grpc.port,
      admin_port: admin.port,
      definition: definitionPath,
      versions: cache.versions(),
    },
    'control plane ready',
  );

  const shutdownSteps: ShutdownStep[] = [
    { name: 'stop definition watcher', run: () => watcher.stop() },
    { name: 'close xDS streams', run: async () => ads.close() },
    { name: 'close gRPC server', run: () => grpc.close(2_000) },
    { name: 'close admin server', run: () => admin.close() },
  ];
  return {
    xdsPort: grpc.port,
    adminPort: admin.port,
    status,
    shutdownSteps,
    close: async () => {
      for (const step of shutdownSteps) await step.run();
    },
  };
}

if (process.argv[1] && realpathSync(resolve(process.argv[1])) === realpathSync(fileURLToPath(import.meta.url))) {
  await runService({
    name: 'control-plane',
    loadConfig: () => loadConfig(configSchema),
    start: (config, logger) => startControlPlane(config, { logger, registry: createMetricsRegistry('control-plane') }),
    // One line per offending field, for the person who just edited the file.
    isUsageError: (error) => error instanceof InvalidDefinitionError,
  });
}
