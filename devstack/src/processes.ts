import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

// A small supervisor for the real processes that tests and `npm start` run (Envoy,
// redis-server, the services under tsx). Every child gets its own process group, so
// stopping it also stops what it spawned; its output is kept in a ring buffer for the
// error message of a failing test; a crash is reported at once instead of surfacing as
// a timeout; and whatever is still running when this process ends is killed, however it
// ends (a watchdog covers SIGKILL, which no handler in this process can).

export interface SpawnOptions {
  /** Label used in logs and errors ("envoy", "ext-authz"). */
  name: string;
  command: string;
  args?: string[];
  /** The complete environment of the child (default: this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Bytes of recent output kept for logs() (default 256 KiB). */
  logBytes?: number;
  /** Called with every complete output line, e.g. to echo a child's log in `npm start`. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Report an exit that stop() did not ask for on stderr (default true). */
  reportUnexpectedExit?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when stop() ended the process. */
  expected: boolean;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  /** Recent stdout and stderr, interleaved in arrival order. */
  logs(): string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
  /** The exit, once it happened. */
  exitInfo(): ExitInfo | undefined;
  /** Sends a signal to the whole process group (SIGSTOP/SIGCONT for outage tests). */
  signal(sig: NodeJS.Signals): void;
  /** SIGTERM to the group, SIGKILL after `graceMs` (default 5000); resolves when all are gone. */
  stop(graceMs?: number): Promise<void>;
  /** waitForPort that fails fast, with this process's logs, if the process exits first. */
  waitForPort(port: number, timeoutMs: number, host?: string): Promise<void>;
  /** waitForHttp that fails fast, with this process's logs, if the process exits first. */
  waitForHttp(url: string, timeoutMs: number, predicate?: HttpPredicate): Promise<HttpProbe>;
}

const live = new Set<ManagedProcess>();

/** Processes spawned by this module that have not exited yet. */
export function liveProcesses(): readonly ManagedProcess[] {
  return [...live];
}

export function spawnProcess(opts: SpawnOptions): ManagedProcess {
  installExitHooks();
  const child = spawn(opts.command, opts.args ?? [], {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Own process group: kill(-pid) reaches grandchildren (tsx's node, a shell's command).
    detached: true,
  });
  const ring = new OutputRing(opts.logBytes ?? 256 * 1024);
  let exit: ExitInfo | undefined;
  let stopping = false;

  const lineSplitters = {
    stdout: lineSplitter((line) => opts.onLine?.(line, 'stdout')),
    stderr: lineSplitter((line) => opts.onLine?.(line, 'stderr')),
  };
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      ring.push(text);
      if (opts.onLine) lineSplitters[stream](text);
    });
  }

  const exited = new Promise<ExitInfo>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (exit) return;
      exit = { code, signal, expected: stopping };
      live.delete(handle);
      if (!stopping && opts.reportUnexpectedExit !== false) {
        process.stderr.write(
          `[devstack] ${opts.name} (pid ${child.pid}) exited unexpectedly (${describeExit(exit)}); last output:\n${tail(ring.text(), 30)}\n`,
        );
      }
      resolve(exit);
    };
    child.once('exit', finish);
    // A command that cannot be started (ENOENT, EACCES) emits 'error' and no 'exit'.
    child.once('error', (err) => {
      ring.push(`[devstack] cannot run ${opts.command}: ${err.message}\n`);
      finish(null, null);
    });
  });

  const pid = child.pid ?? -1;
  const groupAlive = () => pid > 0 && signalGroup(pid, 0);
  const watchdog = pid > 0 ? startWatchdog(pid) : undefined;
  // The watchdog stays while any member of the group may live (a grandchild can outlive the leader).
  const releaseWatchdog = () => {
    if (!groupAlive()) watchdog?.kill('SIGKILL');
  };
  void exited.then(releaseWatchdog);

  const handle: ManagedProcess = {
    name: opts.name,
    pid,
    logs: () => ring.text(),
    exited,
    exitInfo: () => exit,
    signal: (sig) => {
      signalGroup(pid, sig);
    },
    async stop(graceMs = 5000) {
      if (pid <= 0) return;
      stopping = true;
      if (!exit) signalGroup(pid, 'SIGCONT'); // a paused process cannot handle SIGTERM
      signalGroup(pid, 'SIGTERM');
      const deadline = Date.now() + graceMs;
      // Wait for the leader, then for the rest of its group, up to the grace period.
      // ref: false, so a pending grace timer never keeps this process alive after the child is gone.
      await Promise.race([exited, sleep(graceMs, undefined, { ref: false })]);
      while (groupAlive() && Date.now() < deadline) await sleep(50);
      if (groupAlive()) {
        signalGroup(pid, 'SIGKILL');
        await exited;
        while (groupAlive()) await sleep(20);
      }
      await exited;
      releaseWatchdog();
    },
    waitForPort: (port, timeoutMs, host) => waitForPort(port, timeoutMs, host, { watch: [handle] }),
    waitForHttp: (url, timeoutMs, predicate) => waitForHttp(url, timeoutMs, predicate, { watch: [handle] }),
  };
  if (pid > 0) live.add(handle);
  return handle;
}

/** Sends a signal to a process group; false when no member exists any more. */
function signalGroup(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, sig);
    return true;
  } catch {
    return false;
  }
}

function describeExit(e: ExitInfo): string {
  return e.signal ? `signal ${e.signal}` : e.code === null ? 'could not start' : `code ${e.code}`;
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

/**
 * A shell that waits for EOF on a pipe only this process holds, then SIGKILLs the child's
 * group. EOF comes when this process is gone, whichever way it went: a vitest worker killed
 * with SIGKILL, a crash, `kill -9` of `npm start`. Killed by us once the group is gone.
 */
function startWatchdog(pgid: number): ChildProcess | undefined {
  const watchdog = spawn(
    '/bin/sh',
    ['-c', 'trap "" INT TERM HUP; read _; kill -KILL "-$1" 2>/dev/null', 'sh', String(pgid)],
    {
      stdio: ['pipe', 'ignore', 'ignore'],
      // Its own group: a Ctrl-C in the terminal must not reach it (it ignores it anyway).
      detached: true,
    },
  );
  watchdog.once('error', () => {}); // no /bin/sh: the exit hook below is all that is left
  // Neither the watchdog nor its pipe may keep this process alive.
  watchdog.unref();
  (watchdog.stdin as Socket | null)?.unref(); // a pipe, which child_process gives as a net.Socket
  return watchdog;
}

let hooksInstalled = false;

// 'exit' handlers run synchronously, so only SIGKILL is possible there; with the watchdogs
// it keeps a test run from leaving orphans. Signals get a gentler treatment only when
// nobody else handles them (`npm start` installs its own graceful shutdown).
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const p of live) signalGroup(p.pid, 'SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      if (process.listenerCount(sig) > 1) return;
      void Promise.allSettled([...live].map((p) => p.stop(2000))).then(() => {
        process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
      });
    };
    process.on(sig, onSignal);
  }
}

/** Keeps the last `limit` bytes of output (approximately: whole chunks are dropped). */
class OutputRing {
  private chunks: string[] = [];
  private size = 0;
  private dropped = 0;
  constructor(private readonly limit: number) {}

  push(text: string): void {
    this.chunks.push(text);
    this.size += text.length;
    while (this.size > this.limit && this.chunks.length > 1) {
      const first = this.chunks.shift() ?? '';
      this.size -= first.length;
      this.dropped += first.length;
    }
  }

  text(): string {
    const body = this.chunks.join('');
    return this.dropped > 0 ? `[… ${this.dropped} earlier characters dropped …]\n${body}` : body;
  }
}

function lineSplitter(onLine: (line: string) => void): (text: string) => void {
  let partial = '';
  return (text) => {
    const parts = (partial + text).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) onLine(line);
  };
}

// ---------------------------------------------------------------------------------------
// Waiting for readiness

export interface WaitOptions {
  /** Fail as soon as one of these exits, with its logs, instead of waiting for the timeout. */
  watch?: ManagedProcess[];
}

export interface HttpProbe {
  status: number;
  headers: Headers;
  body: string;
}

export type HttpPredicate = (probe: HttpProbe) => boolean;

/** Resolves once a TCP connection to host:port succeeds. */
export async function waitForPort(
  port: number,
  timeoutMs: number,
  host = '127.0.0.1',
  opts: WaitOptions = {},
): Promise<void> {
  await waitUntil(`${host}:${port} to accept connections`, timeoutMs, opts, async () => {
    await connectOnce(host, port, 1000);
    return { done: true, value: undefined };
  });
}

/**
 * Resolves with the first response that satisfies `predicate` (default: a 2xx status).
 * Connection errors and other responses are retried until the timeout.
 */
export async function waitForHttp(
  url: string,
  timeoutMs: number,
  predicate: HttpPredicate = (p) => p.status >= 200 && p.status < 300,
  opts: WaitOptions = {},
): Promise<HttpProbe> {
  return waitUntil(`${url} to answer`, timeoutMs, opts, async () => {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    const probe: HttpProbe = { status: res.status, headers: res.headers, body: await res.text() };
    if (predicate(probe)) return { done: true, value: probe };
    return { done: false, detail: `last answer: ${probe.status} ${probe.body.slice(0, 300)}` };
  });
}

/** One try of a wait: done with a value, or not yet (the detail ends up in the timeout error). */
export type Attempt<T> = { done: true; value: T } | { done: false; detail: string };

/**
 * Retries `attempt` (a throw counts as "not yet") with back-off until it is done, a watched
 * process exits (fails at once, with its output), or the timeout passes (fails naming
 * `what` and the last detail).
 */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  opts: WaitOptions,
  attempt: () => Promise<Attempt<T>>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const watched = opts.watch ?? [];
  let detail = 'no attempt made';
  let delay = 50;
  for (;;) {
    const crashed = watched.find((p) => p.exitInfo());
    if (crashed) {
      const info = crashed.exitInfo() as ExitInfo;
      throw new Error(
        `${crashed.name} exited (${describeExit(info)}) while waiting for ${what}; its output:\n${tail(crashed.logs(), 60)}`,
      );
    }
    try {
      const result = await attempt();
      if (result.done) return result.value;
      detail = result.detail;
    } catch (err) {
      detail = `last error: ${(err as Error).message}${causeOf(err)}`;
    }
    if (Date.now() >= deadline) {
      const logs = watched.map((p) => `\n──── ${p.name} ────\n${tail(p.logs(), 60)}`).join('');
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${detail})${logs}`);
    }
    // Sleep, but wake up early if a watched process exits.
    await Promise.race([sleep(Math.min(delay, Math.max(0, deadline - Date.now()))), ...watched.map((p) => p.exited)]);
    delay = Math.min(delay * 2, 500);
  }
}

function causeOf(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause ? ` (${cause.code ?? cause.message})` : '';
}

function connectOnce(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    socket.setTimeout(timeoutMs);
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(new Error('connect timed out'));
    });
    socket.once('error', (err) => {
      socket.destroy();
      reject(err);
    });
    socket.connect(port, host);
  });
}

/** Whether `port` can be bound on `host` right now (false: something else listens there). */
export async function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  const server = createServer();
  try {
    server.listen(port, host);
    await once(server, 'listening');
    return true;
  } catch {
    return false;
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/**
 * The kernel's range for the local ports of outgoing connections. A port chosen inside it can
 * be taken by any client connection (an e2e test opening thousands) between the moment it is
 * found free and the moment the server binds it.
 */
function ephemeralPortRange(): { low: number; high: number } {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low && high) return { low, high };
  } catch {
    // Not Linux: fall through to the usual default.
  }
  return { low: 32768, high: 60999 };
}

/**
 * The ports freePort gave this process lately: a caller that asks for two before binding
 * either (a test's two listeners) must not get the same one twice, which a random draw or the
 * OS's next ephemeral port can otherwise do (a CI run once put two Envoy listeners on one
 * port that way). Bounded: the oldest are forgotten past 4,096.
 */
const handedOut = new Set<number>();

function handOut(port: number): number {
  handedOut.add(port);
  if (handedOut.size > 4_096) handedOut.delete(handedOut.values().next().value as number);
  return port;
}

/**
 * A TCP port that is free on 127.0.0.1 right now and that this process was not given lately,
 * taken below the ephemeral range so that no outgoing connection can take it before the server
 * that asked for it binds it (the OS picks one when that range leaves no room below it, or
 * after 50 ports found in use or already given).
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const { low } = ephemeralPortRange();
  const floor = 10_000;
  if (low - floor >= 1_000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = floor + Math.floor(Math.random() * (low - floor));
      if (!handedOut.has(port) && (await isPortFree(port, host))) return handOut(port);
    }
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    const server = createServer();
    server.listen(0, host);
    await once(server, 'listening');
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (port && !handedOut.has(port)) return handOut(port);
  }
  throw new Error('could not obtain a free port');
}
