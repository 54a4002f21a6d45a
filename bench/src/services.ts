import { freePort, type ManagedProcess } from '@sekisho/devstack/processes';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { policyTypeUrls } from '@sekisho/service-kit/contract';
import { startPolicyServer } from '@sekisho/service-kit/testing/policy-server';
import { cores, type Runtime, spawnNodePinned } from './common';

// The two policy services as the benchmarks start them: pinned to the server core, their
// policy pushed over a local ADS server, ready when /readyz says so. Startup is spawn → ready.

export interface StartedService {
  proc: ManagedProcess;
  port: number;
  adminPort: number;
  /** Spawn to ready (policy loaded, Redis connected), in ms. */
  startupMs: number;
  stop(): Promise<void>;
}

interface Common {
  name?: string;
  cpuProfile?: boolean;
  /** Extra variables (WORKERS, EXT_AUTHZ_TOKEN_CACHE_SIZE, …). */
  env?: Record<string, string>;
  /** V8 flags instead of production's (productionNodeFlags, and then without productionNodeEnv); undefined keeps both. */
  nodeFlags?: readonly string[];
  /** Instead of the run's (--tsx or dist). */
  runtime?: Runtime;
  /** SEKISHO_WORKERS: processes sharing the gRPC port (default 1, no cluster). */
  workers?: number;
  /** taskset cores of the server (default cores.server). */
  serverCores?: string;
}

interface Spec {
  name: string;
  entry: string;
  /** The service's variable prefix: <prefix>_GRPC_PORT, _ADMIN_PORT, _XDS_ADDRESS. */
  prefix: string;
  env: Record<string, string>;
  typeUrl: string;
  policy: Uint8Array;
}

async function startWithPolicy(spec: Spec, opts: Common): Promise<StartedService> {
  const { name, entry, prefix, typeUrl, policy } = spec;
  const [port, adminPort] = [await freePort(), await freePort()];
  const ads = await startPolicyServer();
  const env = {
    ...spec.env,
    [`${prefix}_GRPC_PORT`]: String(port),
    [`${prefix}_ADMIN_PORT`]: String(adminPort),
    [`${prefix}_XDS_ADDRESS`]: `127.0.0.1:${ads.port}`,
    ...(opts.workers && opts.workers > 1 ? { SEKISHO_WORKERS: String(opts.workers) } : {}),
  };
  const subscribers = opts.workers ?? 1;
  const t0 = performance.now();
  const proc = await spawnNodePinned(
    opts.name ?? name,
    opts.serverCores ?? cores.server,
    entry,
    [],
    { ...process.env, LOG_LEVEL: 'warn', ...env, ...opts.env },
    opts.cpuProfile,
    opts.nodeFlags,
    opts.runtime,
  );
  const stop = async () => {
    await proc.stop();
    ads.close();
  };
  try {
    const deadline = Date.now() + 60_000;
    // Each worker subscribes on its own stream.
    while (ads.streamCount() < subscribers) {
      if (Date.now() > deadline || proc.exitInfo()) throw new Error(`${name} never subscribed:\n${proc.logs()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    ads.pushAll(typeUrl, 'bench-1', policy);
    await proc.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 30_000, (p) => p.status === 200);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    proc,
    port,
    adminPort,
    startupMs: Math.round(performance.now() - t0),
    stop,
  };
}

export function startRateLimitService(
  redisUrl: string,
  policy: RateLimitPolicy,
  opts: Common = {},
): Promise<StartedService> {
  return startWithPolicy(
    {
      name: 'ratelimit-service',
      entry: 'ratelimit-service/src/main.ts',
      prefix: 'RATELIMIT',
      env: { RATELIMIT_REDIS_URL: redisUrl },
      typeUrl: policyTypeUrls.rateLimit,
      policy: RateLimitPolicy.encode(policy).finish(),
    },
    opts,
  );
}

export function startExtAuthzService(keysUrl: string, policy: AuthzPolicy, opts: Common = {}): Promise<StartedService> {
  return startWithPolicy(
    {
      name: 'ext-authz',
      entry: 'ext-authz/src/main.ts',
      prefix: 'EXT_AUTHZ',
      env: {
        EXT_AUTHZ_FIREBASE_CERTS_URL: keysUrl,
        // devstack's key server is plain HTTP on loopback (ext-authz refuses http without this).
        EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true',
      },
      typeUrl: policyTypeUrls.authz,
      policy: AuthzPolicy.encode(policy).finish(),
    },
    opts,
  );
}
