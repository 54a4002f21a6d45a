import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './paths';
import { freePort, liveProcesses, spawnProcess, waitForHttp, waitForPort } from './processes';

// A unique sleep duration ("300.<digits>") lets pgrep find exactly this test's sleeps.
let sleeps = 0;
function uniqueSleep(): string {
  return `300.${process.pid}${Date.now() % 100_000}${sleeps++}`;
}

function pids(marker: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', `^sleep ${marker.replace('.', '\\.')}$`], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

describe('spawnProcess', () => {
  it('keeps stdout and stderr and reports the exit', async () => {
    const p = spawnProcess({
      name: 't',
      command: 'sh',
      args: ['-c', 'echo out; echo err >&2; exit 3'],
      reportUnexpectedExit: false,
    });
    const exit = await p.exited;
    expect(exit).toEqual({ code: 3, signal: null, expected: false });
    expect(p.logs()).toContain('out\n');
    expect(p.logs()).toContain('err\n');
    expect(liveProcesses()).not.toContain(p);
  });

  it('hands complete lines to onLine', async () => {
    const lines: string[] = [];
    const p = spawnProcess({
      name: 't',
      command: 'sh',
      args: ['-c', 'printf "a\\nb"; sleep 0.05; printf "c\\n"'],
      onLine: (line, stream) => lines.push(`${stream}:${line}`),
      reportUnexpectedExit: false,
    });
    await p.exited;
    expect(lines).toEqual(['stdout:a', 'stdout:bc']);
  });

  it('stops the whole process group, grandchildren included', async () => {
    const marker = uniqueSleep();
    const p = spawnProcess({
      name: 't',
      command: 'sh',
      args: ['-c', `sleep ${marker} & sleep ${marker}; wait`],
    });
    await expect.poll(() => pids(marker).length).toBe(2);
    await p.stop();
    expect(pids(marker)).toEqual([]);
    expect(p.exitInfo()).toMatchObject({ signal: 'SIGTERM', expected: true });
  });

  it('kills with SIGKILL when the group ignores SIGTERM past the grace period', async () => {
    const marker = uniqueSleep();
    // Ignored signals stay ignored across exec, so sleep ignores SIGTERM too.
    const p = spawnProcess({ name: 't', command: 'sh', args: ['-c', `trap "" TERM; sleep ${marker}; true`] });
    await expect.poll(() => pids(marker).length).toBe(1);
    const started = Date.now();
    await p.stop(300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(pids(marker)).toEqual([]);
    expect(p.exitInfo()?.signal).toBe('SIGKILL');
  });

  it('reports a command that cannot be started as an exit, with the reason in its logs', async () => {
    const p = spawnProcess({ name: 't', command: '/nonexistent/binary', reportUnexpectedExit: false });
    await p.exited;
    expect(p.logs()).toMatch(/cannot run \/nonexistent\/binary: .*ENOENT/);
  });
});

// A program that supervises a `sleep` through this module, then ends the way `ending` says.
const supervisor = (marker: string, ending: string) => `
import { spawnProcess } from ${JSON.stringify(fileURLToPath(new URL('./processes.ts', import.meta.url)))};
spawnProcess({ name: 'sleeper', command: 'sleep', args: [${JSON.stringify(marker)}] });
console.log('spawned');
${ending}
`;

describe('no orphans, however the supervising process ends', () => {
  it.each([
    ['it calls process.exit', 'setTimeout(() => process.exit(0), 200);', false],
    ['it throws an uncaught error', 'setTimeout(() => { throw new Error("crash"); }, 200);', false],
    ['it is killed with SIGKILL (no handler can run)', 'setInterval(() => {}, 1000);', true],
  ])('when %s', async (_how, ending, killIt) => {
    const marker = uniqueSleep();
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-supervisor-'));
    try {
      const script = join(dir, 'supervisor.ts');
      await writeFile(script, supervisor(marker, ending));
      const parent = spawnProcess({
        name: 'supervisor',
        command: process.execPath,
        args: ['--import', 'tsx', script],
        cwd: repoRoot,
        reportUnexpectedExit: false,
      });
      await expect.poll(() => pids(marker).length, { timeout: 15_000 }).toBe(1);
      // "spawned" is printed once spawnProcess returned, its watchdog started: the sleeper alone
      // shows in ps a moment earlier, and a SIGKILL in between would leave it with no watchdog.
      await expect.poll(() => parent.logs(), { timeout: 15_000 }).toContain('spawned');
      if (killIt) process.kill(parent.pid, 'SIGKILL');
      await parent.exited;
      await expect.poll(() => pids(marker), { timeout: 5_000 }).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('freePort', () => {
  it('never gives the same port twice to a caller that binds none of them yet', async () => {
    // 300 random draws from the ~22,700 ports below the ephemeral range repeat one with a
    // probability of about 86 % unless the ports already given are skipped.
    const ports: number[] = [];
    for (let i = 0; i < 300; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
  });
});

describe('waiting', () => {
  it('fails fast with the logs when the watched process crashes instead of waiting for the timeout', async () => {
    const port = await freePort();
    const p = spawnProcess({
      name: 'crasher',
      command: 'sh',
      args: ['-c', 'echo "fatal: bad config" >&2; exit 1'],
      reportUnexpectedExit: false,
    });
    const started = Date.now();
    await expect(p.waitForHttp(`http://127.0.0.1:${port}/ready`, 30_000)).rejects.toThrow(
      /crasher exited \(code 1\)[\s\S]*fatal: bad config/,
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('waits for an HTTP answer that satisfies the predicate', async () => {
    let hits = 0;
    const server = createServer((_req, res) => {
      hits++;
      res.end(hits >= 3 ? 'LIVE' : 'PRE_INITIALIZING');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    try {
      const probe = await waitForHttp(`http://127.0.0.1:${port}/`, 5000, (p) => p.body === 'LIVE');
      expect(probe).toMatchObject({ status: 200, body: 'LIVE' });
      await waitForPort(port, 1000);
    } finally {
      server.close();
    }
  });

  it('names what it waited for when it times out', async () => {
    const port = await freePort();
    await expect(waitForPort(port, 300)).rejects.toThrow(
      new RegExp(`timed out after 300 ms waiting for 127.0.0.1:${port} .*ECONNREFUSED`),
    );
  });
});
