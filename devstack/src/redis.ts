import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { dockerAnswers, findOnPath } from './host';
import { freePort, type ManagedProcess, spawnProcess, waitUntil } from './processes';

// A real Redis for tests and `npm start`: REDIS_URL when given, else a private
// redis-server from PATH on a free port, else the redis:7 image through testcontainers.

export type RedisSource = 'REDIS_URL' | 'redis-server' | 'testcontainers';

export interface RedisHandle {
  /** redis://host:port (or REDIS_URL as given). */
  readonly url: string;
  readonly source: RedisSource;
  /** Stops what startRedis started; a no-op for REDIS_URL. */
  stop(): Promise<void>;
  /** Recent server output ('' for REDIS_URL). */
  logs(): string;
  /**
   * Outage controls, present only for a spawned redis-server (the one source whose
   * process this module owns). The URL stays the same through all of them.
   */
  readonly control?: RedisOutageControl;
}

export interface RedisOutageControl {
  /** Stops the server: new connections are refused, open ones are closed. */
  down(): Promise<void>;
  /** Starts it again on the same port, empty (no persistence), and waits for PING. */
  up(): Promise<void>;
  /** down() then up(). */
  restart(): Promise<void>;
  /** SIGSTOP: connections are accepted by the kernel but nothing answers (clients time out). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

export interface StartRedisOptions {
  /** Where REDIS_URL and PATH are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Whether a Docker engine answers (default: asks testcontainers). */
  dockerAvailable?: () => Promise<boolean>;
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisHandle> {
  const env = opts.env ?? process.env;
  const fromEnv = env.REDIS_URL?.trim();
  if (fromEnv) {
    return { url: fromEnv, source: 'REDIS_URL', stop: async () => {}, logs: () => '' };
  }
  const binary = findOnPath('redis-server', env.PATH);
  if (binary) return startRedisServer(binary);
  if (await (opts.dockerAvailable ?? dockerAnswers)()) return startRedisContainer();
  throw new Error(
    [
      'No Redis available. Choose one:',
      '  - set REDIS_URL=redis://host:port to use a running Redis 7;',
      '  - install redis-server (Debian/Ubuntu: `apt-get install redis-server`) so it is on PATH;',
      '  - run a Docker engine, and the redis:7 image is started through testcontainers.',
    ].join('\n'),
  );
}

async function startRedisServer(binary: string): Promise<RedisHandle> {
  // A private working directory, so nothing ever lands in the repository.
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-redis-'));
  let port = 0;
  let proc: ManagedProcess | undefined;
  let earlierLogs = '';

  const launch = async (): Promise<void> => {
    if (proc) earlierLogs += proc.logs();
    const p = spawnProcess({
      name: `redis-server:${port}`,
      command: binary,
      args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      cwd: dir,
    });
    proc = p;
    await waitForPing(port, 10_000, p);
  };

  // The port is free when chosen but another process may take it before redis binds it.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      await proc?.stop();
      if (attempt >= 3 || !proc?.logs().includes('Address already in use')) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const down = async () => {
    await proc?.stop();
  };
  const up = async () => {
    if (proc && !proc.exitInfo()) return;
    await launch();
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    source: 'redis-server',
    logs: () => earlierLogs + (proc?.logs() ?? ''),
    stop: async () => {
      await proc?.stop();
      await rm(dir, { recursive: true, force: true });
    },
    control: {
      down,
      up,
      restart: async () => {
        await down();
        await up();
      },
      pause: () => proc?.signal('SIGSTOP'),
      resume: () => proc?.signal('SIGCONT'),
    },
  };
}

async function startRedisContainer(): Promise<RedisHandle> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer('redis:7')
    .withExposedPorts(6379)
    .withCommand(['redis-server', '--save', '', '--appendonly', 'no'])
    .withWaitStrategy(Wait.forLogMessage('Ready to accept connections'))
    .start();
  let output = '';
  (await container.logs()).on('data', (chunk: Buffer | string) => {
    output = (output + chunk.toString()).slice(-256 * 1024);
  });
  return {
    url: `redis://${container.getHost()}:${container.getMappedPort(6379)}`,
    source: 'testcontainers',
    logs: () => output,
    stop: async () => {
      await container.stop();
    },
  };
}

/**
 * Resolves once the server at 127.0.0.1:port answers PING with +PONG (or, with ACL users and
 * the default user off, NOAUTH: it serves); fails at once if `proc` exits. `tls`: over TLS.
 */
export async function waitForPing(
  port: number,
  timeoutMs: number,
  proc?: ManagedProcess,
  opts: { tls?: boolean; authRequired?: boolean } = {},
): Promise<void> {
  await waitUntil(`redis-server on port ${port} to answer PING`, timeoutMs, { watch: proc ? [proc] : [] }, async () => {
    const reply = await ping('127.0.0.1', port, 1000, opts.tls ?? false);
    // -LOADING while it reads a dataset; anything but +PONG means "not yet".
    const up = reply === '+PONG' || (opts.authRequired === true && reply.startsWith('-NOAUTH'));
    return up ? { done: true, value: undefined } : { done: false, detail: `answered ${reply}` };
  });
}

function ping(host: string, port: number, timeoutMs: number, tls = false): Promise<string> {
  return new Promise((resolve, reject) => {
    // The harness only asks whether the server answers: it does not check the certificate.
    const socket = tls ? tlsConnect({ host, port, rejectUnauthorized: false }) : new Socket();
    let reply = '';
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('PING timed out')));
    socket.once('error', reject);
    // A server that closes the connection without a full line must not leave this pending.
    socket.once('close', () => reject(new Error(`connection closed after ${JSON.stringify(reply)}`)));
    socket.on('data', (d) => {
      reply += d.toString();
      if (reply.includes('\r\n')) {
        resolve(reply.trim());
        socket.destroy();
      }
    });
    if (tls) socket.once('secureConnect', () => socket.write('PING\r\n'));
    else socket.connect(port, host, () => socket.write('PING\r\n'));
  });
}

// ---------------------------------------------------------------------------------------
// Topologies for the rate-limit service's tests: a TLS/ACL server, a 3-master Redis
// Cluster and a Sentinel-managed master with a replica. Always private redis-server
// processes (they need the binaries: REDIS_URL and containers cannot provide a topology).

const installHint = 'Debian/Ubuntu: `apt-get install redis-server redis-tools` (redis-server, redis-cli)';

function requireBinary(name: 'redis-server' | 'redis-cli', env: NodeJS.ProcessEnv = process.env): string {
  const binary = findOnPath(name, env.PATH);
  if (!binary)
    throw new Error(`${name} is not on PATH; this test starts its own Redis topology. Install it: ${installHint}`);
  return binary;
}

/** One redis-server on a port of its own, restartable on the same port and directory. */
export interface RedisNode {
  readonly port: number;
  /** Stops the process (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
  /** SIGKILL at once (a crash: no shutdown, no last replication to the replicas). */
  kill(): Promise<void>;
  /** Starts it again on the same port with the same arguments, and waits for PING. */
  start(): Promise<void>;
  pause(): void;
  resume(): void;
  running(): boolean;
  logs(): string;
}

async function startNode(opts: {
  binary: string;
  name: string;
  dir: string;
  /** Arguments given a port (and, when the ports must be chosen together, retried on a clash). */
  args: (port: number) => string[];
  port?: number;
  ping?: { tls?: boolean; authRequired?: boolean };
}): Promise<RedisNode> {
  let port = opts.port ?? 0;
  let proc: ManagedProcess | undefined;
  let earlier = '';
  const launch = async () => {
    if (proc) earlier += proc.logs();
    const p = spawnProcess({
      name: `${opts.name}:${port}`,
      command: opts.binary,
      args: opts.args(port),
      cwd: opts.dir,
    });
    proc = p;
    await waitForPing(port, 15_000, p, opts.ping);
  };
  for (let attempt = 1; ; attempt++) {
    if (opts.port === undefined) port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      await proc?.stop();
      if (opts.port !== undefined || attempt >= 3 || !proc?.logs().includes('Address already in use')) throw err;
    }
  }
  return {
    port,
    stop: async () => {
      await proc?.stop(2_000);
    },
    kill: async () => {
      const p = proc;
      if (!p || p.exitInfo()) return;
      p.signal('SIGKILL');
      await p.exited;
    },
    start: async () => {
      if (proc && !proc.exitInfo()) return;
      await launch();
    },
    pause: () => proc?.signal('SIGSTOP'),
    resume: () => proc?.signal('SIGCONT'),
    running: () => proc !== undefined && !proc.exitInfo(),
    logs: () => earlier + (proc?.logs() ?? ''),
  };
}

/** How redis-cli reaches a server: TLS with the CA, an ACL user and/or a password. */
export interface RedisCliAuth {
  password?: string;
  user?: string;
  tls?: { caFile: string };
}

/** Runs redis-cli against 127.0.0.1:port and returns its output (throws with it on failure). */
export function redisCli(
  port: number,
  args: readonly string[],
  opts: RedisCliAuth & { timeoutMs?: number } = {},
): Promise<string> {
  const cli = requireBinary('redis-cli');
  const tls = opts.tls ? ['--tls', '--cacert', opts.tls.caFile] : [];
  const user = opts.user !== undefined ? ['--user', opts.user] : [];
  // The password through the environment (REDISCLI_AUTH), not the command line.
  const env = opts.password === undefined ? process.env : { ...process.env, REDISCLI_AUTH: opts.password };
  return new Promise((resolve, reject) => {
    execFile(
      cli,
      ['-h', '127.0.0.1', '-p', String(port), ...tls, ...user, ...args],
      { timeout: opts.timeoutMs ?? 10_000, encoding: 'utf8', env },
      (error, stdout, stderr) => {
        if (error)
          reject(new Error(`redis-cli -p ${port} ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`));
        else resolve(stdout.trim());
      },
    );
  });
}

/**
 * Waits until the server at `port` is a replica whose link to its master is up (INFO
 * replication shows master_link_status only on a replica): it holds what the master had, so
 * it can take over.
 */
export async function waitForReplicaSync(port: number, auth: RedisCliAuth = {}, timeoutMs = 30_000): Promise<void> {
  await waitUntil(`the replica ${port} to sync with its master`, timeoutMs, {}, async () => {
    const info = await redisCli(port, ['info', 'replication'], auth).catch((e: Error) => e.message);
    return info.includes('master_link_status:up') ? { done: true, value: undefined } : { done: false, detail: info };
  });
}

/** Waits until the server at `port` answers ROLE as a master (a replica promoted). */
export async function waitForMasterRole(port: number, auth: RedisCliAuth = {}, timeoutMs = 30_000): Promise<void> {
  await waitUntil(`the server ${port} to be a master`, timeoutMs, {}, async () => {
    const role = await redisCli(port, ['role'], auth).catch((e: Error) => e.message);
    return role.startsWith('master') ? { done: true, value: undefined } : { done: false, detail: role };
  });
}

const baseArgs = (port: number, dir: string) => [
  '--port',
  String(port),
  '--bind',
  '127.0.0.1',
  '--save',
  '',
  '--appendonly',
  'no',
  '--dir',
  dir,
];

export type TlsFiles = { certFile: string; keyFile: string; caFile: string; requireClientCertificates?: boolean };

/** A redis-server's arguments for TLS only on `port` (the plain port closed). */
const tlsArgs = (port: number, tls: TlsFiles) => [
  '--port',
  '0',
  '--tls-port',
  String(port),
  '--tls-cert-file',
  tls.certFile,
  '--tls-key-file',
  tls.keyFile,
  '--tls-ca-cert-file',
  tls.caFile,
  '--tls-auth-clients',
  tls.requireClientCertificates ? 'yes' : 'no',
];

export interface SecureRedisOptions {
  /** Serve TLS only (rediss://): PEM files of the server certificate, its key and the CA. */
  tls?: TlsFiles;
  /**
   * ACL users: `commands` (default `+@all`) on `keys` (default every key); the default user
   * is then off.
   */
  users?: ReadonlyArray<{ name: string; password: string; keys?: string; commands?: readonly string[] }>;
  /** More redis-server arguments (`--enable-debug-command yes` for fault tests). */
  extraArgs?: readonly string[];
}

export interface SecureRedisHandle {
  /** rediss:// with TLS, else redis://; no credentials in it. */
  readonly url: string;
  readonly node: RedisNode;
  stop(): Promise<void>;
}

/** A redis-server with TLS and/or ACL users (or other arguments), for the clients' TLS, AUTH and fault paths. */
export async function startSecureRedis(
  opts: SecureRedisOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<SecureRedisHandle> {
  const binary = requireBinary('redis-server', env);
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-redis-secure-'));
  const args = (port: number) => {
    const out = baseArgs(port, dir);
    if (opts.tls) out.push(...tlsArgs(port, opts.tls));
    for (const user of opts.users ?? [])
      out.push(
        '--user',
        user.name,
        'on',
        `>${user.password}`,
        user.keys ?? '~*',
        '&*',
        ...(user.commands ?? ['+@all']),
      );
    if (opts.users?.length) out.push('--user', 'default', 'off');
    out.push(...(opts.extraArgs ?? []));
    return out;
  };
  try {
    const node = await startNode({
      binary,
      name: 'redis-server-secure',
      dir,
      args,
      ping: { tls: opts.tls !== undefined, authRequired: (opts.users?.length ?? 0) > 0 },
    });
    return {
      url: `${opts.tls ? 'rediss' : 'redis'}://127.0.0.1:${node.port}`,
      node,
      stop: async () => {
        await node.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export interface RedisClusterHandle {
  /** redis://127.0.0.1:<port> of every node (masters first), the seed nodes a client is given. */
  readonly urls: readonly string[];
  readonly nodes: readonly RedisNode[];
  /** Resolves once every running node reports cluster_state:ok. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** The node serving a slot (0…16383) as created (without replicas: always; with them: until a failover). */
  nodeForSlot(slot: number): RedisNode;
  /** The master serving a slot now, as a running node's CLUSTER SLOTS says. */
  masterForSlot(slot: number): Promise<RedisNode>;
  /** The nodes replicating `master` now (CLUSTER REPLICAS). */
  replicasOf(master: RedisNode): Promise<RedisNode[]>;
  logs(): string;
  stop(): Promise<void>;
}

/**
 * A real Redis Cluster of `masters` (default 3) masters, each with `replicas` replicas (default
 * 0): redis-server --cluster-enabled yes on free ports, joined by `redis-cli --cluster create
 * --cluster-replicas`. Without replicas a stopped master leaves its slots uncovered, so the
 * cluster answers CLUSTERDOWN until it is back; with them, a replica is promoted once the master
 * has been unreachable for cluster-node-timeout `nodeTimeoutMs` (default 1000 ms). `tls`:
 * clients and the cluster bus over TLS only (`rediss://` URLs; the certificate must name 127.0.0.1).
 */
export async function startRedisCluster(
  opts: { masters?: number; replicas?: number; nodeTimeoutMs?: number; tls?: TlsFiles; env?: NodeJS.ProcessEnv } = {},
): Promise<RedisClusterHandle> {
  const binary = requireBinary('redis-server', opts.env);
  requireBinary('redis-cli', opts.env);
  const masters = opts.masters ?? 3;
  const replicas = opts.replicas ?? 0;
  const { tls } = opts;
  const cli = tls ? { tls: { caFile: tls.caFile } } : {};
  const root = await mkdtemp(join(tmpdir(), 'sekisho-redis-cluster-'));
  const nodes: RedisNode[] = [];
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const dir = join(root, `node-${i}`);
      await mkdir(dir);
      // The bus port is chosen too: port + 10000, the default, may be taken or out of range.
      const busPort = await freePort();
      nodes.push(
        await startNode({
          binary,
          name: 'redis-cluster-node',
          dir,
          args: (port) => [
            ...baseArgs(port, dir),
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, 'nodes.conf'),
            '--cluster-port',
            String(busPort),
            '--cluster-node-timeout',
            String(opts.nodeTimeoutMs ?? 1_000),
            ...(tls ? [...tlsArgs(port, tls), '--tls-cluster', 'yes', '--tls-replication', 'yes'] : []),
            // A replica takes over however long it was cut off from its master (the default
            // refuses one whose data is older than 10 × the node timeout).
            ...(replicas > 0 ? ['--cluster-replica-validity-factor', '0'] : []),
          ],
          ping: { tls: tls !== undefined },
        }),
      );
    }
    await redisCli(
      nodes[0]?.port ?? 0,
      [
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas',
        String(replicas),
        '--cluster-yes',
      ],
      { timeoutMs: 30_000, ...cli },
    );
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    await rm(root, { recursive: true, force: true });
    throw err;
  }

  const waitHealthy = async (timeoutMs = 20_000) => {
    await waitUntil('every Redis Cluster node to report cluster_state:ok', timeoutMs, {}, async () => {
      for (const node of nodes.filter((n) => n.running())) {
        const info = await redisCli(node.port, ['cluster', 'info'], cli).catch((e: Error) => e.message);
        if (!info.includes('cluster_state:ok'))
          return { done: false, detail: `node ${node.port}: ${info.split('\n')[0]}` };
      }
      return { done: true, value: undefined };
    });
  };
  const handle: RedisClusterHandle = {
    urls: nodes.map((n) => `${tls ? 'rediss' : 'redis'}://127.0.0.1:${n.port}`),
    nodes,
    waitHealthy,
    // redis-cli --cluster create splits the slots evenly in node order (the first `masters` nodes).
    nodeForSlot: (slot) => nodes[Math.min(masters - 1, Math.floor((slot * masters) / 16384))] as RedisNode,
    masterForSlot: async (slot) => {
      const asker = nodes.find((n) => n.running());
      if (!asker) throw new Error('no cluster node is running');
      // CLUSTER SLOTS, flattened by redis-cli: start, end, then per node ip, port, id (and more).
      const lines = (await redisCli(asker.port, ['cluster', 'slots'], cli)).split('\n');
      const ports = new Set(nodes.map((n) => String(n.port)));
      for (let i = 0; i + 3 < lines.length; i++) {
        const [start, end, ip, port] = lines.slice(i, i + 4);
        if (ip !== '127.0.0.1' || !ports.has(port ?? '') || !/^\d+$/.test(start ?? '') || !/^\d+$/.test(end ?? ''))
          continue;
        if (Number(start) <= slot && slot <= Number(end)) {
          const node = nodes.find((n) => String(n.port) === port);
          if (node) return node;
        }
      }
      throw new Error(`no master serves slot ${slot}: ${lines.join(' ')}`);
    },
    replicasOf: async (master) => {
      const id = await redisCli(master.port, ['cluster', 'myid'], cli);
      const text = await redisCli(master.port, ['cluster', 'replicas', id], cli);
      return nodes.filter((n) => n !== master && text.includes(`127.0.0.1:${n.port}@`));
    },
    logs: () => nodes.map((n) => n.logs()).join('\n'),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      await rm(root, { recursive: true, force: true });
    },
  };
  try {
    await waitHealthy();
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}

export interface RedisSentinelHandle {
  readonly masterName: string;
  /** redis://127.0.0.1:<port> (rediss:// with TLS) of every sentinel. */
  readonly sentinelUrls: readonly string[];
  /** The two data nodes: [0] starts as master, [1] as its replica. */
  readonly servers: readonly RedisNode[];
  readonly sentinels: readonly RedisNode[];
  /** The port of the master the sentinels name now. */
  masterPort(): Promise<number>;
  /**
   * SENTINEL FAILOVER, then waits until the sentinels name the other server and it
   * answers as a master; returns the new master's port.
   */
  failover(timeoutMs?: number): Promise<number>;
  /** Waits until the sentinels name a master other than `oldPort` that answers as a master. */
  waitForNewMaster(oldPort: number, timeoutMs?: number): Promise<number>;
  /**
   * The data nodes as the sentinels name them now, once the replica is in sync with the master
   * (so a killed master's replica holds what it had and can take over).
   */
  syncedRoles(timeoutMs?: number): Promise<{ master: RedisNode; replica: RedisNode }>;
  /** How redis-cli logs in to the data nodes and to the sentinels (TLS, user, password). */
  readonly dataAuth: RedisCliAuth;
  readonly sentinelAuth: RedisCliAuth;
  logs(): string;
  stop(): Promise<void>;
}

/**
 * A Sentinel setup: a master, one replica, `sentinels` sentinels (default 1; quorum
 * min(2, sentinels)), down-after 1 s so a killed master is replaced in a few seconds.
 * `password`: the data nodes require it (requirepass, masterauth; the sentinels know it);
 * `sentinelPassword`: the sentinels require one of their own. `dataUser` / `sentinelUser`:
 * ACL users instead (the default user off; the replica and the sentinels log in as them).
 * `tls`: data nodes and sentinels serve TLS only, and replicate and monitor over TLS (the
 * certificate must name 127.0.0.1, what the sentinels announce).
 */
export async function startRedisSentinel(
  opts: {
    sentinels?: number;
    masterName?: string;
    password?: string;
    sentinelPassword?: string;
    dataUser?: { name: string; password: string };
    sentinelUser?: { name: string; password: string };
    tls?: TlsFiles;
    env?: NodeJS.ProcessEnv;
  } = {},
): Promise<RedisSentinelHandle> {
  const binary = requireBinary('redis-server', opts.env);
  requireBinary('redis-cli', opts.env);
  const masterName = opts.masterName ?? 'sekisho';
  const count = opts.sentinels ?? 1;
  const root = await mkdtemp(join(tmpdir(), 'sekisho-redis-sentinel-'));
  const { tls, dataUser, sentinelUser } = opts;
  const tlsCli = tls ? { tls: { caFile: tls.caFile } } : {};
  const dataAuth: RedisCliAuth = {
    ...tlsCli,
    ...(dataUser ? { user: dataUser.name, password: dataUser.password } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
  };
  const sentinelAuth: RedisCliAuth = {
    ...tlsCli,
    ...(sentinelUser ? { user: sentinelUser.name, password: sentinelUser.password } : {}),
    ...(opts.sentinelPassword !== undefined ? { password: opts.sentinelPassword } : {}),
  };
  const dataAuthRequired = opts.password !== undefined || dataUser !== undefined;
  const sentinelAuthRequired = opts.sentinelPassword !== undefined || sentinelUser !== undefined;
  const aclUser = (u: { name: string; password: string }) => [
    '--user',
    u.name,
    'on',
    `>${u.password}`,
    '~*',
    '&*',
    '+@all',
  ];
  const servers: RedisNode[] = [];
  const sentinels: RedisNode[] = [];
  const stopAll = async () => {
    await Promise.all([...sentinels, ...servers].map((n) => n.stop()));
    await rm(root, { recursive: true, force: true });
  };
  try {
    for (const role of ['master', 'replica'] as const) {
      const dir = join(root, role);
      await mkdir(dir);
      const master = servers[0];
      servers.push(
        await startNode({
          binary,
          name: `redis-${role}`,
          dir,
          args: (port) => [
            ...baseArgs(port, dir),
            ...(tls ? [...tlsArgs(port, tls), '--tls-replication', 'yes'] : []),
            ...(master ? ['--replicaof', '127.0.0.1', String(master.port)] : []),
            ...(opts.password !== undefined ? ['--requirepass', opts.password, '--masterauth', opts.password] : []),
            ...(dataUser
              ? [
                  ...aclUser(dataUser),
                  '--user',
                  'default',
                  'off',
                  '--masteruser',
                  dataUser.name,
                  '--masterauth',
                  dataUser.password,
                ]
              : []),
          ],
          ping: { tls: tls !== undefined, authRequired: dataAuthRequired },
        }),
      );
    }
    const [master, replica] = servers as [RedisNode, RedisNode];
    await waitForReplicaSync(replica.port, dataAuth, 20_000);
    for (let i = 0; i < count; i++) {
      const dir = join(root, `sentinel-${i}`);
      await mkdir(dir);
      const conf = join(dir, 'sentinel.conf');
      // A sentinel rewrites its configuration file (what it learns), so each has its own.
      await writeFile(
        conf,
        [
          `sentinel monitor ${masterName} 127.0.0.1 ${master.port} ${Math.min(2, count)}`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 10000`,
          ...(opts.password !== undefined ? [`sentinel auth-pass ${masterName} ${opts.password}`] : []),
          ...(dataUser
            ? [
                `sentinel auth-user ${masterName} ${dataUser.name}`,
                `sentinel auth-pass ${masterName} ${dataUser.password}`,
              ]
            : []),
          // A sentinel's own password, and the one it gives its peers.
          ...(opts.sentinelPassword !== undefined
            ? [`requirepass ${opts.sentinelPassword}`, `sentinel sentinel-pass ${opts.sentinelPassword}`]
            : []),
          ...(sentinelUser
            ? [
                `user ${sentinelUser.name} on >${sentinelUser.password} ~* &* +@all`,
                'user default off',
                `sentinel sentinel-user ${sentinelUser.name}`,
                `sentinel sentinel-pass ${sentinelUser.password}`,
              ]
            : []),
          '',
        ].join('\n'),
      );
      sentinels.push(
        await startNode({
          binary,
          name: 'redis-sentinel',
          dir,
          args: (port) => [
            conf,
            '--sentinel',
            ...(tls ? [...tlsArgs(port, tls), '--tls-replication', 'yes'] : ['--port', String(port)]),
            '--bind',
            '127.0.0.1',
            '--dir',
            dir,
          ],
          ping: { tls: tls !== undefined, authRequired: sentinelAuthRequired },
        }),
      );
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  const sentinelPorts = sentinels.map((s) => s.port);
  const masterPort = async (): Promise<number> => {
    let lastError: unknown;
    for (const port of sentinelPorts) {
      try {
        const reply = await redisCli(port, ['sentinel', 'get-master-addr-by-name', masterName], sentinelAuth);
        const answeredPort = Number(reply.split('\n')[1]);
        if (answeredPort > 0) return answeredPort;
      } catch (err) {
        lastError = err;
      }
    }
    throw new Error(`no sentinel names a master for ${masterName}: ${String(lastError)}`);
  };
  const waitForNewMaster = async (oldPort: number, timeoutMs = 30_000): Promise<number> =>
    waitUntil(`the sentinels to promote a master other than ${oldPort}`, timeoutMs, {}, async () => {
      const port = await masterPort().catch(() => oldPort);
      if (port === oldPort) return { done: false, detail: `the master is still ${port}` };
      const role = await redisCli(port, ['role'], dataAuth).catch((e: Error) => e.message);
      return role.startsWith('master') ? { done: true, value: port } : { done: false, detail: `${port}: ${role}` };
    });
  const handle: RedisSentinelHandle = {
    masterName,
    sentinelUrls: sentinelPorts.map((p) => `${tls ? 'rediss' : 'redis'}://127.0.0.1:${p}`),
    servers,
    sentinels,
    masterPort,
    waitForNewMaster,
    syncedRoles: async (timeoutMs = 30_000) => {
      const port = await masterPort();
      const master = servers.find((s) => s.port === port);
      const replica = servers.find((s) => s.port !== port);
      if (!master || !replica) throw new Error(`the sentinels name ${port}, neither data node`);
      await waitForReplicaSync(replica.port, dataAuth, timeoutMs);
      return { master, replica };
    },
    failover: async (timeoutMs = 30_000) => {
      const old = await masterPort();
      // A sentinel refuses a failover until it has seen the replica (INFO every 10 s at first).
      await waitUntil('a sentinel to accept SENTINEL FAILOVER', timeoutMs, {}, async () => {
        const reply = await redisCli(
          sentinelPorts[0] as number,
          ['sentinel', 'failover', masterName],
          sentinelAuth,
        ).catch((e: Error) => e.message);
        return reply === 'OK' ? { done: true, value: undefined } : { done: false, detail: reply };
      });
      return waitForNewMaster(old, timeoutMs);
    },
    dataAuth,
    sentinelAuth,
    logs: () => [...servers, ...sentinels].map((n) => n.logs()).join('\n'),
    stop: stopAll,
  };
  // Ready when every sentinel knows the replica, so a failover can be asked for at once.
  try {
    await waitUntil('the sentinels to discover the replica', 30_000, {}, async () => {
      for (const port of sentinelPorts) {
        const replicas = await redisCli(port, ['sentinel', 'replicas', masterName], sentinelAuth).catch(
          (e: Error) => e.message,
        );
        if (!replicas.includes(String(servers[1]?.port)))
          return { done: false, detail: `sentinel ${port}: ${replicas}` };
      }
      return { done: true, value: undefined };
    });
  } catch (err) {
    await stopAll();
    throw err;
  }
  return handle;
}
