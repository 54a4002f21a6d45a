import { mkdtemp, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

/** Resolves once the server at 127.0.0.1:port answers PING with +PONG; fails at once if `proc` exits. */
export async function waitForPing(port: number, timeoutMs: number, proc?: ManagedProcess): Promise<void> {
  await waitUntil(`redis-server on port ${port} to answer PING`, timeoutMs, { watch: proc ? [proc] : [] }, async () => {
    const reply = await ping('127.0.0.1', port, 1000);
    // -LOADING while it reads a dataset; anything but +PONG means "not yet".
    return reply === '+PONG' ? { done: true, value: undefined } : { done: false, detail: `answered ${reply}` };
  });
}

function ping(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
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
    socket.connect(port, host, () => socket.write('PING\r\n'));
  });
}
