import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAdminServer } from '@sekisho/service-kit/admin-server';
import { ConfigError, envDuration, envEnum, envLogLevel, envPort, loadConfig } from '@sekisho/service-kit/config';
import { type GrpcServiceRegistrar, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import type { Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { runService } from '@sekisho/service-kit/run-service';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import { isLoopbackHost } from '@sekisho/service-kit/xds-channel';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { adminTokenVariable, bearerAuthenticator, readAdminToken, registerAdminApi } from './admin-api';
import { authorize, checkTrustDomain, type MeshChannel, peerIdentityOf } from './channel/identity';
import { createServerTls, readServerTls, type ServerTls, serverTlsVariables } from './channel/server-tls';
import type { FieldError } from './definition/load';
import { LastGoodStore } from './last-good';
import { caFilesOf, loadCaMaterial } from './mesh/ca-material';
import { caSourceOf, checkMeshCaConfig, createMeshCaFromConfig, meshCaConfigFields } from './mesh/config';
import { meshSecretNames, type WorkloadSecrets } from './mesh/contract';
import { savedWorkloadIdentity } from './mesh/saved-secrets';
import { DefinitionWatcher, type DefinitionWatcherOptions, describeFieldError } from './watch';
import { SnapshotCache } from './xds/cache';
import { createAdsServer } from './xds/server';
import { typeUrls } from './xds/type-urls';
import { createViews, gatewayViews, sidecarViews } from './xds/views';

// The control plane process: compile the definition, serve it over ADS, recompile
// whenever the file changes. Run with `npx tsx control-plane/src/main.ts`.

export const configSchema = z
  .object({
    /** The gateway definition file (YAML or TypeScript), relative to the working directory. */
    CONTROL_PLANE_DEFINITION: z.string({ error: 'required: path of the gateway definition file' }).min(1),
    CONTROL_PLANE_HOST: z.string().default('127.0.0.1'),
    CONTROL_PLANE_XDS_PORT: envPort(18000),
    CONTROL_PLANE_ADMIN_PORT: envPort(18001),
    /** The admin server's address; default CONTROL_PLANE_HOST. */
    CONTROL_PLANE_ADMIN_HOST: z.string().min(1).optional(),
    /** A file holding the admin API's bearer token (required when the admin host is not loopback). */
    CONTROL_PLANE_ADMIN_TOKEN_FILE: z.string().min(1).optional(),
    /** The control channel's mutual TLS: the server's certificate and key, and the CA of its clients. */
    CONTROL_PLANE_TLS_CERT_FILE: z.string().min(1).optional(),
    CONTROL_PLANE_TLS_KEY_FILE: z.string().min(1).optional(),
    CONTROL_PLANE_TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
    /** Client identities are spiffe://<this>/<view> URI SANs (or <view>.<this> DNS SANs). */
    CONTROL_PLANE_TLS_TRUST_DOMAIN: z
      .string()
      .default('sekisho.local')
      .refine(
        (value) => {
          try {
            return checkTrustDomain(value) === value;
          } catch {
            return false;
          }
        },
        { message: 'expected a lower-case DNS name such as sekisho.local' },
      ),
    /**
     * Serve plaintext on a non-loopback CONTROL_PLANE_HOST: only where something else (a mesh,
     * a private link) already authenticates and encrypts the channel.
     */
    CONTROL_PLANE_ALLOW_INSECURE: envEnum(['true', 'false'], 'false').transform((value) => value === 'true'),
    /** Where the last good definition is kept for a restart with an invalid file; unset: not kept. */
    CONTROL_PLANE_STATE_DIR: z.string().min(1).optional(),
    /** A burst of definition changes is compiled once quiet this long … */
    CONTROL_PLANE_DEBOUNCE: envDuration('100ms'),
    /** … or once it has gone on this long. */
    CONTROL_PLANE_DEBOUNCE_MAX: envDuration('10s'),
    /** HTTP/2 keepalive pings on every xDS connection: a peer that does not answer is dropped. */
    CONTROL_PLANE_KEEPALIVE: envDuration('30s'),
    /**
     * How long a cluster no route names any more is still served after the proxy ACKed the new
     * routes: requests that matched the old route are still in ext_authz and the rate-limit
     * filter and look their cluster up after them. Keep it above those filters' timeouts.
     */
    CONTROL_PLANE_CLUSTER_DRAIN: envDuration('10s'),
    /** The mesh CA (workload certificates over SDS): see src/mesh/config.ts and the README's Mesh CA. */
    ...meshCaConfigFields,
    LOG_LEVEL: envLogLevel(),
  })
  .superRefine((config, ctx) => {
    checkMeshCaConfig(config, ctx);
    const adminHost = config.CONTROL_PLANE_ADMIN_HOST ?? config.CONTROL_PLANE_HOST;
    if (!isLoopbackHost(adminHost) && config.CONTROL_PLANE_ADMIN_TOKEN_FILE === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [config.CONTROL_PLANE_ADMIN_HOST === undefined ? 'CONTROL_PLANE_HOST' : 'CONTROL_PLANE_ADMIN_HOST'],
        message:
          `the admin server would listen on ${adminHost}, not a loopback address, without authentication: anyone ` +
          'who reaches it would read the connected proxies, the IR and every view. Set CONTROL_PLANE_ADMIN_TOKEN_FILE ' +
          '(a file holding a bearer token), or CONTROL_PLANE_ADMIN_HOST=127.0.0.1',
      });
    }
    const tls = [
      ['CONTROL_PLANE_TLS_CERT_FILE', config.CONTROL_PLANE_TLS_CERT_FILE],
      ['CONTROL_PLANE_TLS_KEY_FILE', config.CONTROL_PLANE_TLS_KEY_FILE],
      ['CONTROL_PLANE_TLS_CLIENT_CA_FILE', config.CONTROL_PLANE_TLS_CLIENT_CA_FILE],
    ] as const;
    const given = tls.filter(([, value]) => value !== undefined).map(([name]) => name);
    if (given.length > 0 && given.length < tls.length) {
      for (const [name, value] of tls) {
        if (value === undefined)
          ctx.addIssue({
            code: 'custom',
            path: [name],
            message: `required with ${given.join(' and ')} (mutual TLS needs the certificate, its key and the client CA)`,
          });
      }
    }
    if (given.length === 0 && !isLoopbackHost(config.CONTROL_PLANE_HOST) && !config.CONTROL_PLANE_ALLOW_INSECURE) {
      ctx.addIssue({
        code: 'custom',
        path: ['CONTROL_PLANE_HOST'],
        message:
          'not a loopback address, and the control channel has no TLS: every policy and TLS private key would be ' +
          'served in plaintext to anyone who connects. Set CONTROL_PLANE_TLS_CERT_FILE, CONTROL_PLANE_TLS_KEY_FILE ' +
          'and CONTROL_PLANE_TLS_CLIENT_CA_FILE, or CONTROL_PLANE_ALLOW_INSECURE=true',
      });
    }
  });

export type ControlPlaneConfig = z.output<typeof configSchema>;

/** The control channel's TLS files, or undefined for plaintext. */
function tlsFilesOf(config: ControlPlaneConfig) {
  const { CONTROL_PLANE_TLS_CERT_FILE: certFile, CONTROL_PLANE_TLS_KEY_FILE: keyFile } = config;
  const clientCaFile = config.CONTROL_PLANE_TLS_CLIENT_CA_FILE;
  return certFile && keyFile && clientCaFile ? { certFile, keyFile, clientCaFile } : undefined;
}

/** loadConfig, then the TLS files read and checked: a bad one is a ConfigError naming its variable. */
export function loadControlPlaneConfig(env: NodeJS.ProcessEnv = process.env): ControlPlaneConfig {
  const config = loadConfig(configSchema, env);
  const files = tlsFilesOf(config);
  if (files) readServerTls(files);
  if (config.CONTROL_PLANE_ADMIN_TOKEN_FILE) readAdminToken(config.CONTROL_PLANE_ADMIN_TOKEN_FILE);
  const meshCa = caSourceOf(config);
  if (meshCa) loadCaMaterial(meshCa);
  return config;
}

/**
 * The one place the xDS gRPC server is bound: address, port, keepalive and the control channel's TLS credentials. Streams
 * are kept alive by HTTP/2 pings from both sides (this server pings every
 * CONTROL_PLANE_KEEPALIVE; Envoy's bootstrap pings every 30 s), so a dead proxy's stream ends
 * instead of lingering.
 */
function startXdsGrpcServer(
  config: ControlPlaneConfig,
  register: (server: GrpcServiceRegistrar) => void,
  tls: ServerTls | undefined,
) {
  return startGrpcServer({
    host: config.CONTROL_PLANE_HOST,
    port: config.CONTROL_PLANE_XDS_PORT,
    register,
    keepaliveMs: config.CONTROL_PLANE_KEEPALIVE,
    ...(tls ? { credentials: tls.credentials } : {}),
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
    /** How often the control channel's certificate files are polled for changes, for tests. */
    tls?: { pollIntervalMs?: number };
    /**
     * Where the workload certificates of the sidecar views and of the ingress's view come from,
     * instead of the mesh CA the configuration names (CONTROL_PLANE_MESH_CA_*): for tests.
     * With neither, a definition with a mesh is refused (field mesh).
     */
    secrets?: WorkloadSecrets;
  },
): Promise<ControlPlane> {
  const { logger, registry } = deps;
  const definitionPath = resolve(deps.cwd ?? process.cwd(), config.CONTROL_PLANE_DEFINITION);
  const cache = new SnapshotCache();
  // The mesh CA: loaded and checked here (a bad CA file stops the start, naming its variable).
  const meshCa = deps.secrets ? undefined : createMeshCaFromConfig(config, { logger, registry, cwd: deps.cwd });
  const secrets = deps.secrets ?? meshCa;
  const views = createViews(gatewayViews(secrets), sidecarViews(secrets));
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
    ...(secrets ? { secrets } : {}),
    debounceMs: config.CONTROL_PLANE_DEBOUNCE,
    maxDelayMs: config.CONTROL_PLANE_DEBOUNCE_MAX,
    ...deps.watcher,
  });

  // A certificate due for rotation: every view is served again (only its Secrets change).
  secrets?.onRotation(() => watcher.refresh('workload certificate rotated'));

  const initial = await watcher.reload('initial', { quiet: true });
  // A file that is invalid at start-up: serve the last good definition saved before, if any.
  if (!initial.ok && !(await watcher.serveSaved(initial))) {
    meshCa?.close();
    throw new InvalidDefinitionError(definitionPath, initial.errors);
  }

  const tlsFiles = tlsFilesOf(config);
  let tls: ServerTls | undefined;
  try {
    // With a mesh CA, sidecars may present their per-pod workload certificate (csi-driver-spiffe)
    // on the channel: the handshake trusts the mesh bundle too (channel/identity.ts decides what
    // each CA's certificates may read).
    const meshSource = meshCa ? caSourceOf(config, deps.cwd) : undefined;
    const meshBundle = meshSource && caFilesOf(meshSource).bundle;
    tls =
      tlsFiles &&
      createServerTls(tlsFiles, {
        logger,
        ...deps.tls,
        ...(meshBundle ? { meshBundle: { file: meshBundle.file, variable: meshBundle.variable } } : {}),
      });
  } catch (error) {
    await watcher.stop();
    meshCa?.close();
    throw error;
  }
  const trustDomain = config.CONTROL_PLANE_TLS_TRUST_DOMAIN;
  // A sidecar view serves the workload its certificate Secret is issued for: what a mesh
  // identity on the channel must be (also for a saved definition, whose Secrets are reissued).
  // Asked before every response on such a stream: the certificate's identity is parsed once per
  // certificate handed out (by its resource hash), not per response.
  const identities = new Map<string, string | undefined>();
  const meshChannel: MeshChannel | undefined = meshCa
    ? {
        trustDomain: config.CONTROL_PLANE_MESH_TRUST_DOMAIN,
        workloadOf: (view) => {
          const certificate = cache.get(typeUrls.secret, view)?.resources.get(meshSecretNames.certificate);
          if (!certificate) return undefined;
          if (!identities.has(certificate.hash)) {
            // Certificates rotate (at half their lifetime): bounded, cleared now and then.
            if (identities.size >= 1024) identities.clear();
            identities.set(certificate.hash, savedWorkloadIdentity(certificate));
          }
          return identities.get(certificate.hash);
        },
      }
    : undefined;
  const ads = createAdsServer({
    cache,
    logger,
    registry,
    classify: (node) => views.classify(node),
    clusterDrainMs: config.CONTROL_PLANE_CLUSTER_DRAIN,
    ...(tls
      ? {
          authorize: (node, view, der) =>
            authorize(
              node,
              peerIdentityOf(der, meshChannel && tls?.channelAuthorities()),
              trustDomain,
              view,
              meshChannel,
            ),
        }
      : {}),
  });
  let grpc: Awaited<ReturnType<typeof startGrpcServer>>;
  try {
    grpc = await startXdsGrpcServer(config, (server) => ads.register(server), tls);
  } catch (error) {
    tls?.close();
    await watcher.stop();
    meshCa?.close();
    throw error;
  }
  const channel = tls
    ? { control_channel: 'mtls', trust_domain: trustDomain }
    : {
        control_channel: 'plaintext',
        ...(isLoopbackHost(config.CONTROL_PLANE_HOST) ? {} : { insecure_override: 'CONTROL_PLANE_ALLOW_INSECURE' }),
      };
  if (!tls) {
    logger[isLoopbackHost(config.CONTROL_PLANE_HOST) ? 'info' : 'warn'](
      { category: 'security', event_type: 'control_channel_plaintext', host: config.CONTROL_PLANE_HOST, ...channel },
      isLoopbackHost(config.CONTROL_PLANE_HOST)
        ? `control channel without TLS: serving ADS on loopback (${config.CONTROL_PLANE_HOST}) only; set ${serverTlsVariables.certFile}, ${serverTlsVariables.keyFile} and ${serverTlsVariables.clientCaFile} for mutual TLS`
        : `control channel without TLS on ${config.CONTROL_PLANE_HOST} (CONTROL_PLANE_ALLOW_INSECURE=true): any client that connects reads every policy and TLS key`,
    );
  }
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
  const adminHost = config.CONTROL_PLANE_ADMIN_HOST ?? config.CONTROL_PLANE_HOST;
  const tokenFile = config.CONTROL_PLANE_ADMIN_TOKEN_FILE;
  let admin: Awaited<ReturnType<typeof startAdminServer>>;
  try {
    // Checked at start-up too: a token file that cannot be used stops the start, naming the variable.
    if (tokenFile) readAdminToken(resolve(deps.cwd ?? process.cwd(), tokenFile));
    admin = await startAdminServer({
      host: adminHost,
      port: config.CONTROL_PLANE_ADMIN_PORT,
      registry,
      logger,
      isReady: () => views.names.every((view) => cache.hasSnapshot(view)),
      status,
      ...(tokenFile
        ? { authenticate: bearerAuthenticator(resolve(deps.cwd ?? process.cwd(), tokenFile), logger) }
        : {}),
      routes: (app) =>
        registerAdminApi(app, {
          cache,
          // Read per request: the sidecar views follow the definition.
          get views() {
            return views.names;
          },
          proxies: () => ads.connections.list(),
          ir: () => watcher.ir(),
          unconverged: () => ads.unconverged(),
        }),
    });
  } catch (error) {
    await watcher.stop();
    ads.close();
    await grpc.close(0);
    tls?.close();
    meshCa?.close();
    throw error;
  }

  logger.info(
    {
      category: 'technical',
      event_type: 'control_plane_ready',
      xds_port: grpc.port,
      admin_port: admin.port,
      admin_host: adminHost,
      admin_auth: tokenFile ? `bearer token (${adminTokenVariable})` : 'none (loopback)',
      ...channel,
      definition: definitionPath,
      views: views.names,
      mesh_ca: meshCa ? 'configured' : deps.secrets ? 'given' : 'none (a definition with a mesh is refused)',
    },
    'control plane ready',
  );

  const shutdownSteps: ShutdownStep[] = [
    { name: 'stop definition watcher', run: () => watcher.stop() },
    { name: 'close xDS streams', run: async () => ads.close() },
    { name: 'close gRPC server', run: () => grpc.close(2_000) },
    { name: 'stop watching the control channel certificate', run: async () => tls?.close() },
    { name: 'close admin server', run: () => admin.close() },
    { name: 'stop watching the mesh CA', run: async () => meshCa?.close() },
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
    loadConfig: () => loadControlPlaneConfig(),
    start: (config, logger) => startControlPlane(config, { logger, registry: createMetricsRegistry('control-plane') }),
    // One line per offending field, for the person who just edited the file.
    isUsageError: (error) => error instanceof InvalidDefinitionError || error instanceof ConfigError,
  });
}
