import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GatewayDefinition } from '@sekisho/control-plane';
import { compileDefinitionFile } from '@sekisho/control-plane/definition/load';
import { policyServiceAddresses } from '@sekisho/control-plane/ir/clusters';
import { extAuthzClusterName, rateLimitClusterName, threatDetectorClusterName } from '@sekisho/control-plane/ir/names';
import { type DemoUpstream, startDemoUpstream } from '@sekisho/demo-upstream/server';
import { assertBuilt, type BuiltService, productionNodeEnv, productionNodeFlags } from './build';
import { type ControlChannelCertificates, createControlChannelCertificates } from './control-channel-certs';
import { type EnvoyHandle, startEnvoy } from './envoy';
import { type AuthEmulator, startAuthEmulator } from './firebase-emulator';
import {
  createFirebaseKeyServer,
  type FirebaseKeyServer,
  type MintIdTokenOptions,
  mintIdToken,
  type SigningKey,
} from './firebase-keys';
import { repoRoot } from './paths';
import { freePort, isPortFree, type ManagedProcess, spawnProcess } from './processes';
import { type RedisHandle, startRedis } from './redis';

// The whole of Sekisho on one machine, exactly as it is deployed: Redis, the
// control plane serving a gateway definition file, ext-authz, the rate-limit service
// and (when the definition has `threats`) the threat detector as their own processes,
// a demo upstream for every service the definition names, and a real Envoy that
// knows only the control plane's address.
// `npm start` and the end-to-end tests both use this, so what the tests prove is
// what a developer runs.

export interface StackOptions {
  /** The gateway definition (.ts or .yaml) the control plane serves and watches. */
  definitionFile: string;
  /** Signing key for development ID tokens; a fresh one when omitted. */
  signingKey?: SigningKey;
  /** Fixed ports for the parts the definition does not place; free ports when omitted or 0. */
  ports?: Partial<
    Record<
      | 'controlPlaneXds'
      | 'controlPlaneAdmin'
      | 'extAuthzAdmin'
      | 'ratelimitAdmin'
      | 'threatDetectorAdmin'
      | 'envoyAdmin'
      | 'keyServer'
      | 'authEmulator',
      number
    >
  >;
  /**
   * Also run the Firebase Auth emulator (the definition's project must be a demo- one) and
   * put ext-authz in its emulator mode (EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST), so the
   * emulator's unsigned ID tokens pass the gateway beside the key server's signed ones.
   */
  authEmulator?: boolean;
  /** Envoy's worker threads (--concurrency); Envoy's default (one per core) when omitted. */
  envoyConcurrency?: number;
  /**
   * The control channel (ADS): `mtls` (default) makes a CA and certificates for this run (the
   * control plane's, and a client certificate per xDS client with its SPIFFE identity) and runs
   * every part with them; `plaintext` runs it without TLS, on loopback.
   */
  controlChannel?: 'mtls' | 'plaintext';
  /** RATELIMIT_REDIS_FAILURE_MODE for the rate-limit service (the definition's redisFailureMode, when set, wins). */
  rateLimitFailureMode?: 'allow' | 'deny' | 'local';
  /** How the ingress Envoy speaks xDS: state of the world ('GRPC', the default) or delta ('DELTA_GRPC'). */
  adsApiType?: 'GRPC' | 'DELTA_GRPC';
  logLevel?: string;
  /**
   * How Sekisho's processes run: `tsx` (default, for tests: the sources as they are) or
   * `dist`, what production runs, plain node on the bundles `npm run build` wrote
   * (`npm start`, bench:gateway, the compiled-services e2e test).
   */
  runtime?: 'tsx' | 'dist';
  /** Called with a line of progress ("starting Envoy…"). */
  progress?: (line: string) => void;
}

export interface Stack {
  /** The https listener's URL when the definition has one, else the plain-HTTP listener's. */
  gatewayUrl: string;
  /** The plain-HTTP listener (it redirects to HTTPS while there is an https listener, by default). */
  httpUrl: string;
  /** The https listener; undefined without listeners.https. */
  httpsUrl: string | undefined;
  envoyAdminUrl: string;
  controlPlaneAdminUrl: string;
  extAuthzAdminUrl: string;
  /**
   * One per ext-authz replica: the stack runs one for each address the definition lists
   * (`policyServices.extAuthz.addresses`), all sharing the stack's Redis; the first is extAuthzAdminUrl.
   */
  extAuthzAdminUrls: string[];
  ratelimitAdminUrl: string;
  /**
   * One per rate-limit replica: the stack runs one for each address the definition lists
   * (`policyServices.rateLimit.addresses`), all sharing the stack's Redis; the first is ratelimitAdminUrl.
   */
  ratelimitAdminUrls: string[];
  /**
   * The threat detector's admin server (/metrics, /status): the stack runs one detector, on
   * `policyServices.threatDetector`'s first address, when the definition has `threats`; else undefined.
   */
  threatDetectorAdminUrl: string | undefined;
  /** The control channel's CA and certificates (mtls), removed at stop; undefined for plaintext. */
  controlChannel: ControlChannelCertificates | undefined;
  /** The control plane's ADS port. */
  xdsPort: number;
  redis: RedisHandle;
  keyServer: FirebaseKeyServer;
  /** The Auth emulator, with `authEmulator: true`; its host is what ext-authz was given. */
  authEmulator: AuthEmulator | undefined;
  definition: GatewayDefinition;
  /** A real RS256 Firebase-format ID token, signed by the key the stack's key server serves. */
  mintToken(uid: string, opts?: { group?: string } & Omit<MintIdTokenOptions, 'projectId' | 'uid'>): Promise<string>;
  /**
   * Stops one of Sekisho's own processes (SIGTERM, graceful), for outage tests; `startService`
   * brings it back with the same configuration and waits until it is ready again.
   */
  stopService(name: ServiceName): Promise<void>;
  startService(name: ServiceName): Promise<void>;
  /** Every process's recent output (the last `lines` lines of each, or all that is kept), for a failing test. */
  logs(lines?: number): string;
  /** Stops everything, each part even when another fails to stop; safe to call twice. */
  stop(): Promise<void>;
}

/** `ext-authz-2`, `ext-authz-3`…: the further ext-authz replicas. */
export type ServiceName =
  | 'control-plane'
  | 'ext-authz'
  | 'ratelimit-service'
  | `ratelimit-service-${number}`
  | 'threat-detector'
  | `ext-authz-${number}`;

interface ServiceSpec {
  name: ServiceName;
  entry: string;
  /** dist/<built>/main.js is the same process compiled. */
  built: BuiltService;
  env: NodeJS.ProcessEnv;
  /** Ready: the control plane has a snapshot; each policy service has its policy (see their /readyz). */
  readyUrl: string;
}

/**
 * The stack runs one threat detector (the first address) and one ext-authz and one rate-limit
 * replica per address.
 */
function firstReplica(service: Parameters<typeof policyServiceAddresses>[0]): string {
  const [first] = policyServiceAddresses(service);
  if (first === undefined) throw new Error('stack: a policy service without an address');
  return first;
}

function portOf(address: string): number {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  if (!Number.isInteger(port) || port <= 0) throw new Error(`stack: no port in address ${address}`);
  return port;
}

/** The threat detector's service when the stack runs one: the definition has `threats` and says where. */
function threatDetectorOf(definition: GatewayDefinition) {
  return definition.threats ? definition.policyServices.threatDetector : undefined;
}

/**
 * Fails before anything starts when a fixed port is taken (a second `npm start`, a local
 * service on 8080): otherwise the one that cannot bind fails late, and Envoy's listener only
 * shows up as a timeout.
 */
async function refuseBusyPorts(definition: GatewayDefinition, ports: NonNullable<StackOptions['ports']>) {
  const { http, https } = definition.listeners;
  const detector = threatDetectorOf(definition);
  const detectorPort: Array<[string, number, string]> = detector
    ? [['policyServices.threatDetector.address', portOf(firstReplica(detector)), '127.0.0.1']]
    : [];
  const fixed: Array<[what: string, port: number, host: string]> = [
    ['listeners.http.port', http.port, http.address],
    ...(https ? [['listeners.https.port', https.port, https.address] as [string, number, string]] : []),
    ...Object.entries(definition.services).flatMap(([name, service]) =>
      service.endpoints.map((endpoint, i): [string, number, string] => [
        `services.${name}.endpoints[${i}]`,
        portOf(endpoint),
        '127.0.0.1',
      ]),
    ),
    ...policyServiceAddresses(definition.policyServices.extAuthz).map((address, i): [string, number, string] => [
      `policyServices.extAuthz.addresses[${i}]`,
      portOf(address),
      '127.0.0.1',
    ]),
    ...policyServiceAddresses(definition.policyServices.rateLimit).map((address, i): [string, number, string] => [
      `policyServices.rateLimit.addresses[${i}]`,
      portOf(address),
      '127.0.0.1',
    ]),
    ...detectorPort,
    ...Object.entries(ports)
      // The detector's admin port matters only when the stack runs a detector.
      .filter(([name, port]) => Boolean(port) && (name !== 'threatDetectorAdmin' || detector !== undefined))
      .map(([name, port]): [string, number, string] => [`ports.${name}`, port as number, '127.0.0.1']),
  ];
  const busy: string[] = [];
  for (const [what, port, host] of fixed) if (!(await isPortFree(port, host))) busy.push(`${what} = ${port}`);
  if (busy.length > 0) throw new Error(`stack: ports already in use: ${busy.join(', ')}`);
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
  const port = async (name: keyof NonNullable<StackOptions['ports']>) => opts.ports?.[name] || (await freePort());
  const ports = {
    controlPlaneXds: await port('controlPlaneXds'),
    controlPlaneAdmin: await port('controlPlaneAdmin'),
    extAuthzAdmin: await port('extAuthzAdmin'),
    ratelimitAdmin: await port('ratelimitAdmin'),
    threatDetectorAdmin: await port('threatDetectorAdmin'),
    envoyAdmin: await port('envoyAdmin'),
    keyServer: await port('keyServer'),
  };
  await refuseBusyPorts(definition, opts.ports ?? {});
  const logLevel = opts.logLevel ?? 'info';
  const processes: ManagedProcess[] = [];
  const upstreams: DemoUpstream[] = [];
  let redis: RedisHandle | undefined;
  let keyServer: FirebaseKeyServer | undefined;
  let authEmulator: AuthEmulator | undefined;
  let envoy: EnvoyHandle | undefined;
  let certificates: ControlChannelCertificates | undefined;

  // Reverse start order; every part is stopped even if an earlier one fails to.
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      const failures: unknown[] = [];
      const attempt = async (part: () => Promise<void> | undefined) => {
        try {
          await part();
        } catch (error) {
          failures.push(error);
        }
      };
      await attempt(() => envoy?.stop());
      for (const child of [...processes].reverse()) await attempt(() => child.stop());
      for (const upstream of upstreams) await attempt(() => upstream.close());
      await attempt(() => keyServer?.close());
      await attempt(() => authEmulator?.stop());
      await attempt(() => redis?.stop());
      await attempt(() => (certificates ? rm(certificates.dir, { recursive: true, force: true }) : undefined));
      if (failures.length > 0) throw new AggregateError(failures, 'stack: some parts did not stop cleanly');
    })();
    return stopped;
  };
  const logs = (lines?: number) => {
    const last = (text: string) => (lines === undefined ? text : text.split('\n').slice(-lines).join('\n'));
    return [
      ...processes.map((p) => `──── ${p.name} ────\n${last(p.logs())}`),
      envoy ? `──── envoy ────\n${last(envoy.logs())}` : '',
      redis ? `──── redis (${redis.source}) ────\n${last(redis.logs())}` : '',
    ].join('\n');
  };
  let serviceSpecs: Map<ServiceName, ServiceSpec> | undefined;
  const extAuthzAdminPorts = [ports.extAuthzAdmin];
  for (let i = 1; i < policyServiceAddresses(definition.policyServices.extAuthz).length; i++) {
    extAuthzAdminPorts.push(await freePort());
  }
  const ratelimitAdminPorts = [ports.ratelimitAdmin];
  for (let i = 1; i < policyServiceAddresses(definition.policyServices.rateLimit).length; i++) {
    ratelimitAdminPorts.push(await freePort());
  }
  // Spawns one of Sekisho's processes (as deployed: its own process), under tsx or compiled,
  // and waits until it is ready, failing at once with its output if it dies first.
  const runtime = opts.runtime ?? 'tsx';
  const launch = async (spec: ServiceSpec) => {
    const child = spawnProcess({
      name: spec.name,
      command: process.execPath,
      args: runtime === 'dist' ? [...productionNodeFlags, assertBuilt(spec.built)] : ['--import', 'tsx', spec.entry],
      cwd: repoRoot,
      // Compiled, with production's environment too (a variable set here still wins, as in k8s).
      env: runtime === 'dist' ? { ...productionNodeEnv, ...spec.env } : spec.env,
    });
    processes.push(child);
    await child.waitForHttp(spec.readyUrl, 60_000);
  };
  const running = (name: ServiceName) => processes.find((p) => p.name === name && !p.exitInfo());

  // Each step is announced, and named in the error if it fails.
  const step = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    progress(what);
    try {
      return await run();
    } catch (error) {
      throw new Error(`${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  };

  try {
    if ((opts.controlChannel ?? 'mtls') === 'mtls') {
      certificates = await step('making the control channel certificates', async () =>
        createControlChannelCertificates(await mkdtemp(join(tmpdir(), 'sekisho-control-channel-'))),
      );
    }
    const channel = certificates;
    const clientTls = (prefix: string, client: string): NodeJS.ProcessEnv =>
      channel
        ? {
            [`${prefix}_XDS_CA_FILE`]: channel.caFile,
            [`${prefix}_XDS_CERT_FILE`]: channel.clients[client]?.certFile,
            [`${prefix}_XDS_KEY_FILE`]: channel.clients[client]?.keyFile,
            [`${prefix}_XDS_SERVER_NAME`]: channel.serverName,
          }
        : {};
    redis = await step('starting Redis', () => startRedis());
    keyServer = await step('starting the development Firebase key server', () =>
      createFirebaseKeyServer({ port: ports.keyServer, ...(opts.signingKey ? { keys: [opts.signingKey] } : {}) }),
    );
    if (opts.authEmulator) {
      const projectId = definition.identity.firebase.projectId;
      authEmulator = await step(`starting the Firebase Auth emulator for ${projectId}`, () =>
        startAuthEmulator({ projectId, port: opts.ports?.authEmulator ?? 0 }),
      );
    }

    for (const [name, service] of Object.entries(definition.services)) {
      for (const endpoint of service.endpoints) {
        upstreams.push(
          await step(`starting demo upstream "${name}" on ${endpoint}`, () =>
            startDemoUpstream({ name, host: '127.0.0.1', port: portOf(endpoint) }),
          ),
        );
      }
    }

    const common = { ...process.env, LOG_LEVEL: logLevel };
    const xdsAddress = `127.0.0.1:${ports.controlPlaneXds}`;
    const redisUrl = redis.url;
    const keyServerUrl = keyServer.url;
    const authEmulatorHost = authEmulator?.host ?? '';
    const extAuthzSpec = (address: string, i: number): ServiceSpec => ({
      name: i === 0 ? 'ext-authz' : `ext-authz-${i + 1}`,
      entry: 'ext-authz/src/main.ts',
      built: 'ext-authz',
      env: {
        ...common,
        EXT_AUTHZ_GRPC_PORT: String(portOf(address)),
        EXT_AUTHZ_ADMIN_PORT: String(extAuthzAdminPorts[i]),
        EXT_AUTHZ_NODE_ID: i === 0 ? 'ext-authz' : `ext-authz-${i + 1}`,
        EXT_AUTHZ_XDS_ADDRESS: xdsAddress,
        ...clientTls('EXT_AUTHZ', 'ext-authz'),
        EXT_AUTHZ_FIREBASE_CERTS_URL: keyServerUrl,
        // The local key server is plain http; only development stacks may say so.
        EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true',
        // Disabled accounts and revoked sessions: the state `npm run admin` writes.
        EXT_AUTHZ_REDIS_URL: redisUrl,
        // Set only here: an inherited value must not turn the mode on unasked.
        EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: authEmulatorHost,
      },
      readyUrl: `http://127.0.0.1:${extAuthzAdminPorts[i]}/readyz`,
    });
    const extAuthzSpecs = policyServiceAddresses(definition.policyServices.extAuthz).map(extAuthzSpec);
    const specs = {
      'control-plane': {
        name: 'control-plane',
        entry: 'control-plane/src/main.ts',
        built: 'control-plane',
        env: {
          ...common,
          CONTROL_PLANE_DEFINITION: opts.definitionFile,
          CONTROL_PLANE_XDS_PORT: String(ports.controlPlaneXds),
          CONTROL_PLANE_ADMIN_PORT: String(ports.controlPlaneAdmin),
          ...(channel
            ? {
                CONTROL_PLANE_TLS_CERT_FILE: channel.controlPlane.certFile,
                CONTROL_PLANE_TLS_KEY_FILE: channel.controlPlane.keyFile,
                CONTROL_PLANE_TLS_CLIENT_CA_FILE: channel.caFile,
                CONTROL_PLANE_TLS_TRUST_DOMAIN: channel.trustDomain,
              }
            : {}),
        },
        readyUrl: `http://127.0.0.1:${ports.controlPlaneAdmin}/readyz`,
      },
    } satisfies Record<string, ServiceSpec>;
    const ratelimitSpec = (address: string, i: number): ServiceSpec => ({
      name: i === 0 ? 'ratelimit-service' : `ratelimit-service-${i + 1}`,
      entry: 'ratelimit-service/src/main.ts',
      built: 'ratelimit-service',
      env: {
        ...common,
        RATELIMIT_GRPC_PORT: String(portOf(address)),
        RATELIMIT_ADMIN_PORT: String(ratelimitAdminPorts[i]),
        RATELIMIT_NODE_ID: i === 0 ? 'ratelimit-service' : `ratelimit-service-${i + 1}`,
        RATELIMIT_XDS_ADDRESS: xdsAddress,
        ...clientTls('RATELIMIT', 'ratelimit'),
        RATELIMIT_REDIS_URL: redisUrl,
        RATELIMIT_REDIS_FAILURE_MODE: opts.rateLimitFailureMode ?? 'allow',
      },
      readyUrl: `http://127.0.0.1:${ratelimitAdminPorts[i]}/readyz`,
    });
    const ratelimitSpecs = policyServiceAddresses(definition.policyServices.rateLimit).map(ratelimitSpec);
    const detector = threatDetectorOf(definition);
    // The detector reads its rules from the access-log entries themselves (the control plane's
    // custom tag), so it needs only where to listen and the Redis ext-authz reads blocks from.
    const detectorSpec: ServiceSpec | undefined = detector && {
      name: 'threat-detector',
      entry: 'threat-detector/src/main.ts',
      built: 'threat-detector',
      env: {
        ...common,
        THREAT_GRPC_PORT: String(portOf(firstReplica(detector))),
        THREAT_ADMIN_PORT: String(ports.threatDetectorAdmin),
        THREAT_REDIS_URL: redisUrl,
      },
      readyUrl: `http://127.0.0.1:${ports.threatDetectorAdmin}/readyz`,
    };
    serviceSpecs = new Map<ServiceName, ServiceSpec>([
      ['control-plane', specs['control-plane']],
      ...ratelimitSpecs.map((spec): [ServiceName, ServiceSpec] => [spec.name, spec]),
      ...extAuthzSpecs.map((spec): [ServiceName, ServiceSpec] => [spec.name, spec]),
      ...(detectorSpec ? [['threat-detector', detectorSpec] as [ServiceName, ServiceSpec]] : []),
    ]);
    await step('starting the control plane', () => launch(specs['control-plane']));
    await step(
      detectorSpec
        ? 'starting ext-authz, the rate-limit service and the threat detector'
        : 'starting ext-authz and the rate-limit service',
      () =>
        Promise.all([
          ...extAuthzSpecs.map(launch),
          ...ratelimitSpecs.map(launch),
          ...(detectorSpec ? [launch(detectorSpec)] : []),
        ]),
    );

    envoy = await step('starting Envoy', () =>
      startEnvoy({
        nodeId: 'sekisho-ingress',
        cluster: 'sekisho-ingress',
        controlPlane: {
          host: '127.0.0.1',
          port: ports.controlPlaneXds,
          ...(channel
            ? {
                tls: {
                  caFile: channel.caFile,
                  certFile: channel.clients.ingress?.certFile ?? '',
                  keyFile: channel.clients.ingress?.keyFile ?? '',
                  serverName: channel.serverName,
                },
              }
            : {}),
        },
        adminPort: ports.envoyAdmin,
        logLevel: logLevel === 'debug' ? 'debug' : 'warning',
        concurrency: opts.envoyConcurrency,
        adsApiType: opts.adsApiType,
      }),
    );
    const startedEnvoy = envoy;
    await step('waiting for Envoy to serve the ingress listener', () =>
      startedEnvoy.waitForListener('ingress_http', 60_000),
    );
    if (definition.listeners.https) {
      // Warm only once its certificates arrived over SDS.
      await step('waiting for Envoy to serve the https listener', () =>
        startedEnvoy.waitForListener('ingress_https', 60_000),
      );
    }
    // The policy services' clusters are health-checked: until the first check passes, Envoy
    // would answer 503 for every request (authentication fails closed).
    // The detector's too: until then Envoy drops the access-log entries it cannot stream.
    const policyClusters = [
      extAuthzClusterName,
      rateLimitClusterName,
      ...(threatDetectorOf(definition) ? [threatDetectorClusterName] : []),
    ];
    await step(`waiting for Envoy to see ${policyClusters.join(', ')} healthy`, () =>
      Promise.all(policyClusters.map((name) => startedEnvoy.waitForHealthyCluster(name, 60_000))),
    );
  } catch (error) {
    const output = logs(40);
    await stop().catch(() => {}); // the start-up error is the one worth reporting
    throw new Error(
      `stack: ${error instanceof Error ? error.message : String(error)}\n\nlast output of each part:\n${output}`,
      { cause: error },
    );
  }

  const { http, https } = definition.listeners;
  // A wildcard address is reached on loopback; an IPv6 literal goes in brackets.
  const url = (scheme: string, { address, port }: { address: string; port: number }) => {
    const host = address === '0.0.0.0' ? '127.0.0.1' : address === '::' ? '::1' : address;
    return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  };
  const httpUrl = url('http', http);
  const httpsUrl = https && url('https', https);
  const activeKeyServer = keyServer;
  return {
    gatewayUrl: httpsUrl ?? httpUrl,
    httpUrl,
    httpsUrl,
    envoyAdminUrl: envoy.adminUrl,
    controlPlaneAdminUrl: `http://127.0.0.1:${ports.controlPlaneAdmin}`,
    extAuthzAdminUrl: `http://127.0.0.1:${ports.extAuthzAdmin}`,
    extAuthzAdminUrls: extAuthzAdminPorts.map((port) => `http://127.0.0.1:${port}`),
    ratelimitAdminUrl: `http://127.0.0.1:${ports.ratelimitAdmin}`,
    ratelimitAdminUrls: ratelimitAdminPorts.map((port) => `http://127.0.0.1:${port}`),
    threatDetectorAdminUrl: threatDetectorOf(definition) && `http://127.0.0.1:${ports.threatDetectorAdmin}`,
    controlChannel: certificates,
    xdsPort: ports.controlPlaneXds,
    redis,
    keyServer: activeKeyServer,
    authEmulator,
    definition,
    mintToken: (uid, { group, claims, ...rest } = {}) =>
      mintIdToken(activeKeyServer.signingKey, {
        ...rest,
        projectId: definition.identity.firebase.projectId,
        uid,
        claims: { ...claims, ...(group ? { [definition.identity.groupClaim]: group } : {}) },
      }),
    stopService: async (name) => {
      await running(name)?.stop();
    },
    startService: async (name) => {
      if (running(name)) return;
      const spec = serviceSpecs?.get(name);
      if (!spec) throw new Error(`stack: no service ${name}`);
      await launch(spec);
    },
    logs,
    stop,
  };
}
