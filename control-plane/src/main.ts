import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAdminServer } from '@sekisho/service-kit/admin-server';
import { envDuration, envLogLevel, envPort, loadConfig } from '@sekisho/service-kit/config';
import { type GrpcServiceRegistrar, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import type { Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { runService } from '@sekisho/service-kit/run-service';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import type { FieldError } from './definition/load';
import { LastGoodStore } from './last-good';
import { DefinitionWatcher, type DefinitionWatcherOptions, describeFieldError } from './watch';
import { SnapshotCache } from './xds/cache';
import { createAdsServer } from './xds/server';
import { createViews, gatewayViews } from './xds/views';

// The control plane process: compile the definition, serve it over ADS, recompile
// whenever the file changes. Run with `npx tsx control-plane/src/main.ts`.

export const configSchema = z.object({
  /** The gateway definition file (YAML or TypeScript), relative to the working directory. */
  CONTROL_PLANE_DEFINITION: z.string({ error: 'required: path of the gateway definition file' }).min(1),
  CONTROL_PLANE_HOST: z.string().default('127.0.0.1'),
  CONTROL_PLANE_XDS_PORT: envPort(18000),
  CONTROL_PLANE_ADMIN_PORT: envPort(18001),
  /** Where the last good definition is kept for a restart with an invalid file; unset: not kept. */
  CONTROL_PLANE_STATE_DIR: z.string().min(1).optional(),
  /** A burst of definition changes is compiled once quiet this long … */
  CONTROL_PLANE_DEBOUNCE: envDuration('100ms'),
  /** … or once it has gone on this long. */
  CONTROL_PLANE_DEBOUNCE_MAX: envDuration('10s'),
  /** HTTP/2 keepalive pings on every xDS connection: a peer that does not answer is dropped. */
  CONTROL_PLANE_KEEPALIVE: envDuration('30s'),
  LOG_LEVEL: envLogLevel(),
});

export type ControlPlaneConfig = z.output<typeof configSchema>;

/**
 * The one place the xDS gRPC server is bound: address, port and (later) credentials. Streams
 * are kept alive by HTTP/2 pings from both sides (this server pings every
 * CONTROL_PLANE_KEEPALIVE; Envoy's bootstrap pings every 30 s), so a dead proxy's stream ends
 * instead of lingering.
 */
function startXdsGrpcServer(config: ControlPlaneConfig, register: (server: GrpcServiceRegistrar) => void) {
  return startGrpcServer({
    host: config.CONTROL_PLANE_HOST,
    port: config.CONTROL_PLANE_XDS_PORT,
    register,
    keepaliveMs: config.CONTROL_PLANE_KEEPALIVE,
  });
}

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
  const views = createViews(gatewayViews());
  const store = config.CONTROL_PLANE_STATE_DIR
    ? new LastGoodStore(resolve(deps.cwd ?? process.cwd(), config.CONTROL_PLANE_STATE_DIR))
    : undefined;
  const watcher = new DefinitionWatcher({
    path: definitionPath,
    cache,
    logger,
    registry,
    views,
    store,
    debounceMs: config.CONTROL_PLANE_DEBOUNCE,
    maxDelayMs: config.CONTROL_PLANE_DEBOUNCE_MAX,
    ...deps.watcher,
  });

  const initial = await watcher.reload('initial', { quiet: true });
  // A file that is invalid at start-up: serve the last good definition saved before, if any.
  if (!initial.ok && !(await watcher.serveSaved(initial))) {
    throw new InvalidDefinitionError(definitionPath, initial.errors);
  }

  const ads = createAdsServer({ cache, logger, registry, classify: (node) => views.classify(node) });
  const grpc = await startXdsGrpcServer(config, (server) => ads.register(server));
  watcher.start();

  const status = () => {
    const w = watcher.status();
    return {
      service: 'control-plane',
      definition: w.path,
      versions: Object.assign({}, ...views.names.map((view) => cache.versions(view))),
      views: Object.fromEntries(views.names.map((view) => [view, cache.versions(view)])),
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
      isReady: () => views.names.every((view) => cache.hasSnapshot(view)),
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
      views: views.names,
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
