import { RateLimitResponse, RateLimitServiceService } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { type AdminServer, startAdminServer } from '@sekisho/service-kit/admin-server';
import { policyResourceNames, policyTypeUrls, policyViews, rateLimitDomain } from '@sekisho/service-kit/contract';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger, type Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { type PolicySubscription, subscribePolicy } from '@sekisho/service-kit/policy-client';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import { processesPerReplica } from '@sekisho/service-kit/workers';
import type { Registry } from 'prom-client';
import { type RateLimitConfig, xdsChannelOf } from './config';
import { type ConfigDirectory, openConfigDirectory } from './file-config/directory';
import { createValueHasher } from './limiter/keys';
import type { StoreFailureMode } from './limiter/resilient-limiter';
import { createLimiterStack } from './limiter/stack';
import type { Clock } from './limiter/types';
import { type CompiledPolicy, compilePolicy } from './policy/compile';
import { createRateLimitServer } from './service';

export interface RateLimitApp {
  grpcPort: number;
  adminPort: number;
  registry: Registry;
  /** Installs a policy as an ADS update would; throws (a NACK) when it is invalid. */
  applyPolicy(policy: RateLimitPolicy, version: string): void;
  /** The RATELIMIT_CONFIG_DIR files, when that variable is set. */
  configDirectory: ConfigDirectory | undefined;
  isReady(): boolean;
  status(): Record<string, unknown>;
  /** gRPC (drains in-flight calls), policy subscription, Redis, admin: in that order. */
  shutdownSteps: ShutdownStep[];
  close(): Promise<void>;
}

/**
 * Wires the service: Redis-backed limiter, policy from the control plane over ADS and/or
 * from the files of RATELIMIT_CONFIG_DIR, the gRPC RateLimitService and the admin server.
 * `subscribe: false` leaves the control plane's policy to applyPolicy (tests that run
 * without a control plane).
 */
export async function startRateLimitApp(
  config: RateLimitConfig,
  opts: {
    logger?: Logger;
    /** Overrides Redis's clock for the windows (tests that move time). */
    clock?: Clock;
    subscribe?: boolean;
  } = {},
): Promise<RateLimitApp> {
  const logger = opts.logger ?? createLogger('ratelimit-service', { level: config.LOG_LEVEL });
  const registry = createMetricsRegistry('ratelimit-service');
  const hashValues = createValueHasher(config.RATELIMIT_KEY_SECRET);

  let active: { policy: CompiledPolicy; version: string } | undefined;
  // The gateway definition's choice, when its policy carries one, else this replica's setting.
  const failureMode = (): StoreFailureMode => active?.policy.storeFailureMode ?? config.RATELIMIT_REDIS_FAILURE_MODE;
  const localReplicas = () => active?.policy.localReplicas ?? config.RATELIMIT_LOCAL_REPLICAS;
  // With SEKISHO_WORKERS each process of the replica sees its share of the replica's traffic
  // (connections are handed out in turn), so the local limiter divides by replicas × workers.
  const workers = processesPerReplica();
  const localDivisor = () => localReplicas() * workers;

  const stack = createLimiterStack({
    topology: config.redis,
    commandTimeoutMs: config.RATELIMIT_REDIS_TIMEOUT,
    hashValues,
    keyTag: config.RATELIMIT_REDIS_KEY_TAG,
    maxBatch: config.RATELIMIT_REDIS_BATCH_MAX,
    breakerFailures: config.RATELIMIT_BREAKER_FAILURES,
    breakerOpenMs: config.RATELIMIT_BREAKER_OPEN_FOR,
    cacheSize: config.RATELIMIT_LOCAL_CACHE_SIZE,
    localMaxKeys: config.RATELIMIT_LOCAL_MAX_KEYS,
    failureMode,
    localDivisor,
    clock: opts.clock,
    logger,
    registry,
  });
  const { redis, breaker, cache, local, limiter, metrics } = stack;
  // Readiness needs Redis once, not always: a pod taken out of service during a Redis outage
  // would leave Envoy with no rate-limit service at all, and the configured failure mode
  // (RATELIMIT_REDIS_FAILURE_MODE) would never get to answer.
  const redisConnectedOnce = stack.connectedOnce;
  // The control plane's last refused policy (a NACK), until one is applied: /status and a gauge.
  let lastPolicyError: { version: string; error: string } | undefined;
  const applyPolicy = (policy: RateLimitPolicy, version: string) => {
    let compiled: CompiledPolicy;
    try {
      compiled = compilePolicy(policy);
    } catch (error) {
      lastPolicyError = { version, error: error instanceof Error ? error.message : String(error) };
      metrics.policyLoadError.set(1);
      throw error;
    }
    lastPolicyError = undefined;
    metrics.policyLoadError.set(0);
    active = { policy: compiled, version };
    metrics.policyInfo.reset();
    metrics.policyInfo.set({ version, domain: compiled.domain }, 1);
    metrics.policyRules.set(compiled.rules.length);
  };

  // Files are read before the servers start, so the first request already sees them; a
  // directory that does not exist stops the start-up, naming the variable.
  let configDirectory: ConfigDirectory | undefined;
  if (config.RATELIMIT_CONFIG_DIR !== undefined) {
    try {
      configDirectory = await openConfigDirectory({
        dir: config.RATELIMIT_CONFIG_DIR,
        pollIntervalMs: config.RATELIMIT_CONFIG_POLL_INTERVAL,
        reservedDomains: [rateLimitDomain],
        logger,
        registry,
      });
    } catch (error) {
      await stack.close();
      throw error;
    }
  }
  const directory = configDirectory;
  const controlPlane = config.RATELIMIT_XDS_ADDRESS !== undefined;

  // Before a policy there is nothing to limit locally: local answers as allow.
  const noPolicyMode =
    config.RATELIMIT_NO_POLICY_MODE ?? (config.RATELIMIT_REDIS_FAILURE_MODE === 'deny' ? 'deny' : 'allow');
  // With a control plane configured, readiness waits for its policy; files alone are ready
  // once read (done above, before anything listens).
  const isReady = () => (!controlPlane || active !== undefined) && redisConnectedOnce();
  const status = () => ({
    policy_version: active?.version ?? null,
    policy_last_error: lastPolicyError ?? null,
    domain: active?.policy.domain ?? null,
    rule_count: active?.policy.rules.length ?? 0,
    redis: redis.status,
    redis_mode: config.redis.mode,
    redis_connected_since_start: redisConnectedOnce(),
    redis_failure_mode: failureMode(),
    redis_breaker: breaker.state,
    mode_in_force: limiter.modeInForce(),
    local_replicas: localReplicas(),
    worker_processes: workers,
    local_limit_divisor: localDivisor(),
    local_cache_entries: cache.size,
    local_known_blocks: cache.blocks,
    local_limiter_keys: local.size,
    no_policy_mode: noPolicyMode,
    control_plane: config.RATELIMIT_XDS_ADDRESS ?? null,
    config_dir: directory?.status() ?? null,
  });

  const closeRedis = stack.close;

  let grpc: GrpcServer | undefined;
  let admin: AdminServer | undefined;
  try {
    grpc = await startGrpcServer({
      host: config.RATELIMIT_HOST,
      port: config.RATELIMIT_GRPC_PORT,
      // Envoy's gRPC health checks take a replica without policy out of rotation.
      isServing: isReady,
      register: (server) =>
        server.addService(
          RateLimitServiceService,
          createRateLimitServer({
            policy: () => active?.policy,
            fileDomains: directory ? () => directory.domains() : undefined,
            controlPlane,
            limiter,
            failureMode,
            noPolicyMode,
            headerStyle: config.RATELIMIT_HEADERS,
            hashValues,
            logger,
            metrics,
          }),
          // One reused protobuf writer for every RateLimitResponse (service-kit's http2 transport).
          { shouldRateLimit: RateLimitResponse.encode },
        ),
    });
    admin = await startAdminServer({
      host: config.RATELIMIT_HOST,
      port: config.RATELIMIT_ADMIN_PORT,
      registry,
      logger,
      isReady,
      // Why requests are answered as they are: through Redis, or the failure mode in force.
      readyDetails: () => ({
        redis: redis.status,
        redis_breaker: breaker.state,
        mode_in_force: limiter.modeInForce(),
        failure_mode: failureMode(),
      }),
      status,
    });
  } catch (error) {
    // A port in use: release what was opened so an in-process caller is not left with handles.
    await grpc?.close(0);
    directory?.close();
    await closeRedis();
    throw error;
  }
  const grpcServer = grpc;
  const adminServer = admin;
  logger.info(
    { category: 'technical', event_type: 'ratelimit_listening', port: grpcServer.port },
    'rate-limit service listening',
  );

  // Policy arrives only once the service can answer; before that Envoy gets no decision anyway.
  const subscription: PolicySubscription | undefined =
    opts.subscribe === false || config.RATELIMIT_XDS_ADDRESS === undefined
      ? undefined
      : subscribePolicy({
          address: config.RATELIMIT_XDS_ADDRESS,
          channel: xdsChannelOf(config),
          nodeId: config.RATELIMIT_NODE_ID,
          view: policyViews.rateLimit,
          typeUrl: policyTypeUrls.rateLimit,
          resourceName: policyResourceNames.rateLimit,
          decode: (bytes) => RateLimitPolicy.decode(bytes),
          apply: applyPolicy,
          logger,
        });

  const shutdownSteps: ShutdownStep[] = [
    { name: 'grpc', run: () => grpcServer.close() },
    { name: 'policy subscription', run: async () => subscription?.close() },
    { name: 'configuration directory', run: async () => directory?.close() },
    { name: 'redis', run: closeRedis },
    { name: 'admin', run: () => adminServer.close() },
  ];

  return {
    grpcPort: grpcServer.port,
    adminPort: adminServer.port,
    registry,
    applyPolicy,
    configDirectory: directory,
    isReady,
    status,
    shutdownSteps,
    close: async () => {
      for (const step of shutdownSteps) await step.run();
    },
  };
}
