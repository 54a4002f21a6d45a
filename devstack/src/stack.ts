import type { GatewayDefinition } from '@sekisho/control-plane';
import { compileDefinitionFile } from '@sekisho/control-plane/definition/load';
import { type DemoUpstream, startDemoUpstream } from '@sekisho/demo-upstream/server';
import { type EnvoyHandle, startEnvoy } from './envoy';
import {
  createFirebaseKeyServer,
  type FirebaseKeyServer,
  type MintIdTokenOptions,
  mintIdToken,
  type SigningKey,
} from './firebase-keys';
import { repoRoot } from './paths';
import { freePort, type ManagedProcess, spawnProcess, waitForHttp } from './processes';
import { type RedisHandle, startRedis } from './redis';

// The whole of Sekisho on one machine, exactly as it is deployed: Redis, the
// control plane serving a gateway definition file, ext-authz and the rate-limit
// service as their own processes, a demo upstream for every service the
// definition names, and a real Envoy that knows only the control plane's address.
// `npm start` and the end-to-end tests both use this, so what the tests prove is
// what a developer runs.

export interface StackOptions {
  /** The gateway definition (.ts or .yaml) the control plane serves and watches. */
  definitionFile: string;
  /** Signing key for development ID tokens; a fresh one when omitted. */
  signingKey?: SigningKey;
  /** Fixed ports for the parts the definition does not place; free ports when omitted. */
  ports?: Partial<
    Record<
      'controlPlaneXds' | 'controlPlaneAdmin' | 'extAuthzAdmin' | 'ratelimitAdmin' | 'envoyAdmin' | 'keyServer',
      number
    >
  >;
  /** RATELIMIT_REDIS_FAILURE_MODE for the rate-limit service. */
  rateLimitFailureMode?: 'allow' | 'deny';
  logLevel?: string;
  /** Called with a line of progress ("starting Envoy…"). */
  progress?: (line: string) => void;
}

export interface Stack {
  gatewayUrl: string;
  envoyAdminUrl: string;
  controlPlaneAdminUrl: string;
  extAuthzAdminUrl: string;
  ratelimitAdminUrl: string;
  redis: RedisHandle;
  keyServer: FirebaseKeyServer;
  definition: GatewayDefinition;
  /** A real RS256 Firebase-format ID token, signed by the key the stack's key server serves. */
  mintToken(uid: string, opts?: { group?: string } & Omit<MintIdTokenOptions, 'projectId' | 'uid'>): Promise<string>;
  /** Every process's recent output, for a failing test. */
  logs(): string;
  stop(): Promise<void>;
}

const tsxEntry = (file: string) => ['--import', 'tsx', file];

function portOf(address: string): number {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  if (!Number.isInteger(port) || port <= 0) throw new Error(`stack: no port in address ${address}`);
  return port;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const progress = opts.progress ?? (() => {});
  const compiled = await compileDefinitionFile(opts.definitionFile);
  if (!compiled.ok) {
    throw new Error(
      `stack: ${opts.definitionFile} is invalid:\n${compiled.errors.map((e) => `  ${e.path || '(file)'}: ${e.message}`).join('\n')}`,
    );
  }
  const definition = compiled.definition;
  const port = async (name: keyof NonNullable<StackOptions['ports']>) => opts.ports?.[name] ?? (await freePort());
  const ports = {
    controlPlaneXds: await port('controlPlaneXds'),
    controlPlaneAdmin: await port('controlPlaneAdmin'),
    extAuthzAdmin: await port('extAuthzAdmin'),
    ratelimitAdmin: await port('ratelimitAdmin'),
    envoyAdmin: await port('envoyAdmin'),
    keyServer: await port('keyServer'),
  };
  const logLevel = opts.logLevel ?? 'info';
  const processes: ManagedProcess[] = [];
  const upstreams: DemoUpstream[] = [];
  let redis: RedisHandle | undefined;
  let keyServer: FirebaseKeyServer | undefined;
  let envoy: EnvoyHandle | undefined;

  const stop = async () => {
    await envoy?.stop();
    for (const child of [...processes].reverse()) await child.stop();
    await Promise.all(upstreams.map((u) => u.close()));
    await keyServer?.close();
    await redis?.stop();
  };
  const logs = () =>
    [
      ...processes.map((p) => `──── ${p.name} ────\n${p.logs()}`),
      envoy ? `──── envoy ────\n${envoy.logs()}` : '',
      redis ? `──── redis (${redis.source}) ────\n${redis.logs()}` : '',
    ].join('\n');

  try {
    progress('starting Redis');
    redis = await startRedis();

    progress('starting the development Firebase key server');
    keyServer = await createFirebaseKeyServer({
      port: ports.keyServer,
      ...(opts.signingKey ? { keys: [opts.signingKey] } : {}),
    });

    for (const [name, service] of Object.entries(definition.services)) {
      for (const endpoint of service.endpoints) {
        progress(`starting demo upstream "${name}" on ${endpoint}`);
        upstreams.push(await startDemoUpstream({ name, host: '127.0.0.1', port: portOf(endpoint) }));
      }
    }

    const common = { ...process.env, LOG_LEVEL: logLevel };
    const xdsAddress = `127.0.0.1:${ports.controlPlaneXds}`;
    progress('starting the control plane');
    const controlPlane = spawnProcess({
      name: 'control-plane',
      command: process.execPath,
      args: tsxEntry('control-plane/src/main.ts'),
      cwd: repoRoot,
      env: {
        ...common,
        CONTROL_PLANE_DEFINITION: opts.definitionFile,
        CONTROL_PLANE_XDS_PORT: String(ports.controlPlaneXds),
        CONTROL_PLANE_ADMIN_PORT: String(ports.controlPlaneAdmin),
      },
    });
    processes.push(controlPlane);
    await controlPlane.waitForHttp(`http://127.0.0.1:${ports.controlPlaneAdmin}/readyz`, 60_000);

    progress('starting ext-authz and the rate-limit service');
    processes.push(
      spawnProcess({
        name: 'ext-authz',
        command: process.execPath,
        args: tsxEntry('ext-authz/src/main.ts'),
        cwd: repoRoot,
        env: {
          ...common,
          EXT_AUTHZ_GRPC_PORT: String(portOf(definition.policyServices.extAuthz.address)),
          EXT_AUTHZ_ADMIN_PORT: String(ports.extAuthzAdmin),
          EXT_AUTHZ_XDS_ADDRESS: xdsAddress,
          EXT_AUTHZ_FIREBASE_CERTS_URL: keyServer.url,
        },
      }),
      spawnProcess({
        name: 'ratelimit-service',
        command: process.execPath,
        args: tsxEntry('ratelimit-service/src/main.ts'),
        cwd: repoRoot,
        env: {
          ...common,
          RATELIMIT_GRPC_PORT: String(portOf(definition.policyServices.rateLimit.address)),
          RATELIMIT_ADMIN_PORT: String(ports.ratelimitAdmin),
          RATELIMIT_XDS_ADDRESS: xdsAddress,
          RATELIMIT_REDIS_URL: redis.url,
          RATELIMIT_REDIS_FAILURE_MODE: opts.rateLimitFailureMode ?? 'allow',
        },
      }),
    );
    const watch = { watch: processes };
    await Promise.all([
      waitForHttp(`http://127.0.0.1:${ports.extAuthzAdmin}/readyz`, 60_000, undefined, watch),
      waitForHttp(`http://127.0.0.1:${ports.ratelimitAdmin}/readyz`, 60_000, undefined, watch),
    ]);

    progress('starting Envoy');
    envoy = await startEnvoy({
      nodeId: 'sekisho-ingress',
      cluster: 'sekisho-ingress',
      controlPlane: { host: '127.0.0.1', port: ports.controlPlaneXds },
      adminPort: ports.envoyAdmin,
      logLevel: logLevel === 'debug' ? 'debug' : 'warning',
    });
    await envoy.waitForListener('ingress_http', 60_000);
  } catch (error) {
    const output = logs();
    await stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${output}`);
  }

  const listener = definition.listeners.http;
  const gatewayHost = listener.address === '0.0.0.0' ? '127.0.0.1' : listener.address;
  const activeKeyServer = keyServer;
  return {
    gatewayUrl: `http://${gatewayHost}:${listener.port}`,
    envoyAdminUrl: envoy.adminUrl,
    controlPlaneAdminUrl: `http://127.0.0.1:${ports.controlPlaneAdmin}`,
    extAuthzAdminUrl: `http://127.0.0.1:${ports.extAuthzAdmin}`,
    ratelimitAdminUrl: `http://127.0.0.1:${ports.ratelimitAdmin}`,
    redis,
    keyServer: activeKeyServer,
    definition,
    mintToken: (uid, { group, claims, ...rest } = {}) =>
      mintIdToken(activeKeyServer.signingKey, {
        ...rest,
        projectId: definition.identity.firebase.projectId,
        uid,
        claims: { ...claims, ...(group ? { [definition.identity.groupClaim]: group } : {}) },
      }),
    logs,
    stop,
  };
}
