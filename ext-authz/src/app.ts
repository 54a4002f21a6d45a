import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { type AdminServer, startAdminServer } from '@sekisho/service-kit/admin-server';
import { policyResourceNames, policyTypeUrls, policyViews } from '@sekisho/service-kit/contract';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger, type Logger } from '@sekisho/service-kit/logger';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { type PolicySubscription, subscribePolicy } from '@sekisho/service-kit/policy-client';
import type { ShutdownStep } from '@sekisho/service-kit/shutdown';
import type { Registry } from 'prom-client';
import { RedisAccountStore } from './accounts/redis-store';
import { encodeCheckResponse } from './check-response';
import { authorizationService, createAuthorizationServer, logDroppedDenials } from './check-service';
import { type ExtAuthzConfig, xdsChannelOf } from './config';
import type { VerifyToken } from './decision';
import { DenialLogLimiter } from './denial-log-limiter';
import { FirebaseKeyStore, type KeyStoreOptions } from './firebase/key-store';
import { isDemoProject, VerifiedTokenCache, verifyFirebaseIdToken } from './firebase/verify';
import { createExtAuthzMetrics } from './metrics';
import { type CompiledPolicy, compileAuthzPolicy } from './policy';
import { RedisThreatStore } from './threats/block-store';
import { createUserLimits, type UserLimits } from './user-limits';

export interface ExtAuthzApp {
  grpcPort: number;
  adminPort: number;
  registry: Registry;
  keyStore: FirebaseKeyStore;
  /** The account state's copy; undefined without EXT_AUTHZ_REDIS_URL. */
  accounts: RedisAccountStore | undefined;
  threats: RedisThreatStore | undefined;
  /** Installs a policy as an ADS update would; throws (a NACK) when it is invalid. */
  applyPolicy(policy: AuthzPolicy, version: string): void;
  /** Ready = a policy is in force, the Firebase keys are loaded (not needed in the emulator mode), the account state loaded once (with a Redis) and shutdown has not begun. */
  isReady(): boolean;
  status(): Record<string, unknown>;
  /**
   * Readiness off, gRPC (drains in-flight checks), the denial log's last summary, policy
   * subscription, key refresh, account state, threat state, user limits, admin: in that order.
   */
  shutdownSteps: ShutdownStep[];
  close(): Promise<void>;
}

/**
 * Wires the service: the Firebase key store, the AuthzPolicy from the control plane
 * over ADS, the gRPC Authorization service and the admin server. `subscribe: false`
 * leaves policy to applyPolicy (tests without a control plane). The service starts
 * without keys or policy and denies with 503 until it has both.
 */
export async function startExtAuthzApp(
  config: ExtAuthzConfig,
  opts: { logger?: Logger; subscribe?: boolean; fetch?: KeyStoreOptions['fetch'] } = {},
): Promise<ExtAuthzApp> {
  const logger = opts.logger ?? createLogger('ext-authz', { level: config.LOG_LEVEL });
  const registry = createMetricsRegistry('ext-authz');
  const metrics = createExtAuthzMetrics(registry);
  // Development only (config refuses it under NODE_ENV=production): unsigned emulator tokens.
  const emulatorHost = config.EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST;
  metrics.emulatorMode(emulatorHost !== undefined);

  const keyStore = new FirebaseKeyStore({
    url: config.EXT_AUTHZ_FIREBASE_CERTS_URL,
    fetchTimeoutMs: config.EXT_AUTHZ_KEYS_FETCH_TIMEOUT,
    unknownKidIntervalMs: config.EXT_AUTHZ_KEYS_UNKNOWN_KID_INTERVAL,
    maxStaleMs: config.EXT_AUTHZ_KEYS_MAX_STALE,
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
    onRefresh: (event) => {
      metrics.keyRefresh(event);
      const fields = {
        category: 'technical',
        trigger: event.trigger,
        key_count: event.keyCount,
        response_time: event.durationMs,
      };
      if (event.ok) logger.info({ ...fields, event_type: 'keys_refreshed' }, 'Firebase public keys loaded');
      else {
        logger.warn(
          { ...fields, event_type: 'keys_refresh_failed', error_details: event.error },
          event.keyCount > 0 ? 'Firebase key refresh failed; keeping the old keys' : 'Firebase keys unavailable',
        );
      }
    },
  });

  // The per-user limits the definition counts in the Check (perUserLimits: ext-authz), in the
  // account state's Redis; its connection opens with the first policy that has such a limit.
  const userLimits: UserLimits | undefined = config.redis
    ? createUserLimits({
        topology: config.redis,
        commandTimeoutMs: config.EXT_AUTHZ_LIMITS_REDIS_TIMEOUT,
        failureMode: config.EXT_AUTHZ_LIMITS_REDIS_FAILURE_MODE,
        keySecret: config.EXT_AUTHZ_LIMITS_KEY_SECRET,
        headerStyle: config.EXT_AUTHZ_LIMITS_HEADERS,
        lease: { fraction: config.EXT_AUTHZ_LIMITS_LEASE, max: config.EXT_AUTHZ_LIMITS_LEASE_MAX },
        logger,
        registry,
      })
    : undefined;

  let active: { compiled: CompiledPolicy; version: string } | undefined;
  const applyPolicy = (policy: AuthzPolicy, version: string) => {
    let compiled: CompiledPolicy;
    try {
      compiled = compileAuthzPolicy(policy);
      const limits = policy.userLimits;
      if (limits && limits.rules.length > 0 && !userLimits) {
        throw new Error(
          'the policy counts per-user limits in ext-authz (policyServices.rateLimit.perUserLimits: ext-authz), which needs a Redis: set EXT_AUTHZ_REDIS_URL, or leave perUserLimits to the rate-limit service',
        );
      }
      // Applied last: a refused policy leaves the limits in force as they were.
      userLimits?.apply(limits);
    } catch (error) {
      metrics.policyRejected();
      throw error;
    }
    active = { compiled, version };
    metrics.policyApplied(version, compiled.projectId);
    if (emulatorHost !== undefined && !isDemoProject(compiled.projectId)) {
      logger.warn(
        { category: 'technical', event_type: 'emulator_mode_project', project_id: compiled.projectId },
        `Auth emulator mode: the project ${compiled.projectId} is not a demo- one, so its unsigned tokens are refused`,
      );
    }
  };

  const denialLog = new DenialLogLimiter(
    {
      perClient: config.EXT_AUTHZ_DENIAL_LOG_PER_CLIENT,
      perCause: config.EXT_AUTHZ_DENIAL_LOG_PER_CAUSE,
      windowMs: config.EXT_AUTHZ_DENIAL_LOG_WINDOW,
    },
    () => performance.now(),
    (dropped, windowMs) => logDroppedDenials(logger, dropped, windowMs),
  );

  const tokenCache = new VerifiedTokenCache(config.EXT_AUTHZ_TOKEN_CACHE_SIZE);
  const verify: VerifyToken = (token, projectId) => {
    metrics.tokenVerified();
    return verifyFirebaseIdToken(token, {
      projectId,
      resolveKey: (kid) => keyStore.getKey(kid),
      now: Date.now(),
      clockToleranceMs: config.EXT_AUTHZ_CLOCK_TOLERANCE,
      cache: tokenCache,
      ...(emulatorHost !== undefined ? { acceptEmulatorTokens: true } : {}),
    });
  };

  // Off without a Redis: said at start-up, and in /status.
  const accounts = config.redis
    ? new RedisAccountStore({
        redis: config.redis,
        keyPrefix: config.EXT_AUTHZ_ACCOUNTS_KEY_PREFIX,
        resyncMs: config.EXT_AUTHZ_ACCOUNTS_RESYNC,
        prune: {
          retentionSeconds: Math.ceil(config.EXT_AUTHZ_REVOCATION_RETENTION / 1000),
          intervalMs: config.EXT_AUTHZ_REVOCATION_PRUNE_INTERVAL,
        },
        logger,
        events: metrics.accounts,
      })
    : undefined;

  // Blocks are never a reason to be unready: until they are loaded nobody is refused by them.
  const threats =
    config.redis && config.EXT_AUTHZ_THREATS
      ? new RedisThreatStore({
          redis: config.redis,
          keyPrefix: config.EXT_AUTHZ_THREATS_KEY_PREFIX,
          resyncMs: config.EXT_AUTHZ_THREATS_RESYNC,
          logger,
          events: metrics.threats,
        })
      : undefined;
  const threatStatus = () => (threats ? { enabled: true, ...threats.status() } : { enabled: false });

  let draining = false;
  // Once loaded, a lost Redis leaves the replica ready: it decides from its last state. In the
  // emulator mode the keys are not needed for the emulator's tokens (an offline laptop).
  const isReady = () =>
    !draining &&
    active !== undefined &&
    (keyStore.hasKeys() || emulatorHost !== undefined) &&
    (accounts === undefined || accounts.loaded) &&
    (userLimits === undefined || userLimits.ready());
  const emulatorStatus = () =>
    emulatorHost !== undefined
      ? { enabled: true, host: emulatorHost, accepts_unsigned_tokens: true }
      : { enabled: false };
  const accountStatus = () => (accounts ? { enabled: true, ...accounts.status() } : { enabled: false });
  const status = () => {
    const keys = keyStore.status();
    return {
      policy_version: active?.version ?? null,
      project_id: active?.compiled.projectId ?? null,
      groups: active ? [...active.compiled.groups.keys()] : [],
      // null: every provider except anonymous.
      sign_in_providers: active?.compiled.signInProviders ? [...active.compiled.signInProviders] : null,
      tenants: active ? [...active.compiled.tenants] : [],
      customer_id_claim: active?.compiled.customerIdClaim || null,
      draining,
      verified_tokens_cached: tokenCache.size,
      auth_emulator: emulatorStatus(),
      accounts: accountStatus(),
      threats: threatStatus(),
      user_limits: userLimits ? { enabled: userLimits.active(), ...userLimits.status() } : { enabled: false },
      keys: {
        url: config.EXT_AUTHZ_FIREBASE_CERTS_URL,
        count: keys.keyCount,
        kids: keys.kids,
        last_refresh_ok: keys.lastRefreshOk ?? null,
        last_attempt_at: keys.lastAttemptAt ?? null,
        last_success_at: keys.lastSuccessAt ?? null,
        expires_at: keys.expiresAt ?? null,
        last_error: keys.lastError ?? null,
      },
    };
  };

  let subscription: PolicySubscription | undefined;
  let grpc: GrpcServer | undefined;
  let admin: AdminServer | undefined;
  // Each step tolerates what was never started, so the same list undoes a failed start-up.
  const shutdownSteps: ShutdownStep[] = [
    {
      name: 'readiness',
      run: async () => {
        draining = true;
      },
    },
    { name: 'grpc', run: async () => grpc?.close() },
    // After the last Check: what the running window left out gets its summary line.
    { name: 'denial log', run: async () => denialLog.close() },
    { name: 'policy subscription', run: async () => subscription?.close() },
    { name: 'key refresh', run: async () => keyStore.close() },
    { name: 'account state', run: async () => accounts?.close() },
    { name: 'threat state', run: async () => threats?.close() },
    { name: 'user limits', run: async () => userLimits?.close() },
    { name: 'admin', run: async () => admin?.close() },
  ];
  const close = async () => {
    for (const step of shutdownSteps) await step.run();
  };

  try {
    if (opts.subscribe !== false) {
      subscription = subscribePolicy({
        address: config.EXT_AUTHZ_XDS_ADDRESS,
        channel: xdsChannelOf(config),
        nodeId: config.EXT_AUTHZ_NODE_ID,
        view: policyViews.extAuthz,
        typeUrl: policyTypeUrls.authz,
        resourceName: policyResourceNames.authz,
        decode: (bytes) => AuthzPolicy.decode(bytes),
        apply: applyPolicy,
        logger,
      });
    }
    if (emulatorHost !== undefined) {
      logger.warn(
        { category: 'technical', event_type: 'emulator_mode', emulator_host: emulatorHost },
        `AUTH EMULATOR MODE (EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST=${emulatorHost}): unsigned ID tokens of a demo- project are ACCEPTED; anybody can write one. Development only, never in production.`,
      );
    }
    // Not awaited: Google being unreachable at start-up must not stop the service;
    // it stays unready (and answers 503) until the keys arrive.
    void keyStore.start();
    threats?.start();
    if (accounts) accounts.start();
    else {
      logger.warn(
        { category: 'technical', event_type: 'accounts_disabled' },
        'EXT_AUTHZ_REDIS_URL is not set: disabled accounts and revoked sessions are not enforced',
      );
    }

    grpc = await startGrpcServer({
      host: config.EXT_AUTHZ_HOST,
      port: config.EXT_AUTHZ_GRPC_PORT,
      // Envoy's gRPC health checks take a replica without policy out of rotation.
      isServing: isReady,
      register: (server) =>
        server.addService(
          // Its requests decoded by decodeCheckRequestView: only what Check reads.
          authorizationService,
          createAuthorizationServer({
            policy: () => active?.compiled,
            verify,
            logger,
            metrics,
            denialLog,
            ...(accounts ? { accounts } : {}),
            ...(threats ? { threats } : {}),
            ...(userLimits ? { userLimits } : {}),
          }),
          // One reused protobuf writer for every CheckResponse (service-kit's http2 transport),
          // written by the hand encoder (the generated encode's bytes, without its objects).
          { check: encodeCheckResponse },
        ),
    });
    admin = await startAdminServer({
      host: config.EXT_AUTHZ_HOST,
      port: config.EXT_AUTHZ_ADMIN_PORT,
      registry,
      logger,
      isReady,
      readyDetails: () => ({ accounts: accountStatus(), auth_emulator: emulatorStatus() }),
      status,
    });
    logger.info({ category: 'technical', event_type: 'ext_authz_listening', port: grpc.port }, 'ext-authz listening');
    return {
      grpcPort: grpc.port,
      adminPort: admin.port,
      registry,
      keyStore,
      accounts,
      threats,
      applyPolicy,
      isReady,
      status,
      shutdownSteps,
      close,
    };
  } catch (error) {
    // Start-up failed (a port in use): undo what was started, then report.
    await close();
    throw error;
  }
}
