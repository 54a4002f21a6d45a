import { AccessLogServiceService } from '@sekisho/proto/envoy/service/accesslog/v3/als';
import { type AdminServer, startAdminServer } from '@sekisho/service-kit/admin-server';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger, type Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { redisNodeOptions } from '@sekisho/service-kit/redis-topology';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import { Redis, type RedisOptions } from 'ioredis';
import type { Registry } from 'prom-client';
import { AlertSender } from './alerts';
import { type ThreatDetectorConfig, threatRedisTopology } from './config';
import { Detector } from './detector';
import { openGeoIpDatabase } from './geoip';
import { createAlertMetrics, createDetectorMetrics } from './metrics';
import { defineThreatScripts } from './redis-store';
import { createAccessLogServer } from './service';

export interface ThreatDetectorApp {
  grpcPort: number;
  adminPort: number;
  registry: Registry;
  detector: Detector;
  /** What the admin server's /status says. */
  status(): { redis: string; pending_keys: number; geoip: { type: string; builtAt: string } | null };
  shutdownSteps: ShutdownStep[];
  close(): Promise<void>;
}

/** The gRPC access-log service, the flush timer, Redis and the admin server. */
export async function startThreatDetectorApp(
  config: ThreatDetectorConfig,
  opts: { logger?: Logger; now?: () => number } = {},
): Promise<ThreatDetectorApp> {
  const logger = opts.logger ?? createLogger('threat-detector', { level: config.LOG_LEVEL });
  // Before anything connects: a database that cannot be read stops the start, as a bad setting does.
  const geoip = config.THREAT_GEOIP_DATABASE ? await openGeoIpDatabase(config.THREAT_GEOIP_DATABASE) : undefined;
  if (geoip)
    logger.info(
      { category: 'technical', event_type: 'geoip_database_loaded', ...geoip.description },
      'GeoIP database loaded for the geo anomaly rule',
    );
  const registry = createMetricsRegistry('threat-detector');
  // Flushes run off the request path: a command may wait for a reconnect, but not forever.
  // Standalone or through Sentinel (a failover: the sentinels' +switch-master or a READONLY
  // reply reconnects to the new master; facts buffered meanwhile wait for the next flush).
  const redis = new Redis({
    ...(redisNodeOptions(threatRedisTopology(config)) as RedisOptions),
    reconnectOnError: (error) => error.message.startsWith('READONLY'),
    sentinelRetryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2_000,
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
  });
  redis.on('error', () => {}); // a failed flush pauses detection and logs once (detector.ts)
  defineThreatScripts(redis);
  let detector: Detector | undefined;
  const events = createDetectorMetrics(registry, () => detector?.pendingKeys ?? 0);
  const alerts = config.THREAT_ALERT_WEBHOOK_URL
    ? new AlertSender({
        url: config.THREAT_ALERT_WEBHOOK_URL,
        maxPerMinute: config.THREAT_ALERT_MAX_PER_MINUTE,
        retries: config.THREAT_ALERT_RETRIES,
        logger,
        events: createAlertMetrics(registry),
      })
    : undefined;
  detector = new Detector({
    ...(alerts ? { alerts } : {}),
    ...(geoip ? { geoip } : {}),
    redis,
    keyPrefix: config.THREAT_REDIS_KEY_PREFIX,
    maxPendingKeys: config.THREAT_MAX_PENDING_KEYS,
    now: opts.now ?? Date.now,
    logger,
    events,
  });
  const running = detector;
  const timer = setInterval(() => void running.flush(), config.THREAT_FLUSH_INTERVAL);
  timer.unref();

  const status = () => ({
    redis: redis.status,
    pending_keys: running.pendingKeys,
    geoip: geoip?.description ?? null,
  });
  let grpc: GrpcServer | undefined;
  let admin: AdminServer | undefined;
  const closeRedis = async () => {
    if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
    else redis.disconnect();
  };
  try {
    grpc = await startGrpcServer({
      host: config.THREAT_HOST,
      port: config.THREAT_GRPC_PORT,
      transport: 'grpc-js',
      register: (server) => server.addService(AccessLogServiceService, createAccessLogServer(running, events.entries)),
    });
    admin = await startAdminServer({
      host: config.THREAT_HOST,
      port: config.THREAT_ADMIN_PORT,
      registry,
      logger,
      // Detection down never makes Envoy's logging fail: always ready; /status says why it waits.
      isReady: () => true,
      status,
    });
  } catch (error) {
    clearInterval(timer);
    await grpc?.close(0);
    await closeRedis();
    throw error;
  }
  const grpcServer = grpc;
  const adminServer = admin;
  logger.info(
    { category: 'technical', event_type: 'grpc_listening', port: grpcServer.port },
    'access-log service listening',
  );
  const shutdownSteps: ShutdownStep[] = [
    { name: 'grpc', run: () => grpcServer.close() },
    {
      name: 'flush',
      run: async () => {
        clearInterval(timer);
        await running.flush();
        await alerts?.drain();
      },
    },
    { name: 'redis', run: closeRedis },
    { name: 'admin', run: () => adminServer.close() },
  ];
  return {
    grpcPort: grpcServer.port,
    adminPort: adminServer.port,
    registry,
    detector: running,
    status,
    shutdownSteps,
    close: async () => {
      for (const step of shutdownSteps) await step.run();
    },
  };
}
