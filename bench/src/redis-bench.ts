import { mkdtemp, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOnPath } from '@sekisho/devstack/host';
import { freePort } from '@sekisho/devstack/processes';
import { waitForPing } from '@sekisho/devstack/redis';
import { cores, spawnPinned } from './common';

// A private redis-server pinned to the load generator's core (both services under test share
// it, so it is not part of either side's core), and INFO commandstats over a raw socket.

export async function startPinnedRedis() {
  const binary = findOnPath('redis-server');
  if (!binary) throw new Error('redis-server is needed: `npm run setup` installs it (apt-get install redis-server)');
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-bench-redis-'));
  const port = await freePort();
  const proc = spawnPinned('redis-server', cores.redis, binary, [
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
  ]);
  await waitForPing(port, 10_000, proc);
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc,
    commandCalls: () => redisCommandCalls(port),
    stop: async () => {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Parses INFO commandstats: `cmdstat_evalsha:calls=12,usec=...` lines to {evalsha: 12}. */
export function parseCommandStats(info: string): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const line of info.split(/\r?\n/)) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (match) calls[match[1] as string] = Number(match[2]);
  }
  return calls;
}

/** Calls per command since the server started, leaving out INFO itself. */
async function redisCommandCalls(port: number): Promise<Record<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    const socket = new Socket();
    let data = '';
    socket.setTimeout(5_000, () => socket.destroy(new Error('INFO commandstats timed out')));
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
      // A bulk string reply: $<len>\r\n<body>\r\n
      const header = /^\$(\d+)\r\n/.exec(data);
      if (header && Buffer.byteLength(data) >= header[0].length + Number(header[1]) + 2) {
        socket.end();
        resolve(data.slice(header[0].length));
      }
    });
    socket.connect(port, '127.0.0.1', () => socket.write('INFO commandstats\r\n'));
  });
  const calls = parseCommandStats(text);
  delete calls.info;
  return calls;
}

/** Commands run between two commandstats snapshots, in total and per command. */
export function commandsBetween(before: Record<string, number>, after: Record<string, number>) {
  const perCommand: Record<string, number> = {};
  let total = 0;
  for (const [name, count] of Object.entries(after)) {
    const delta = count - (before[name] ?? 0);
    if (delta > 0) {
      perCommand[name] = delta;
      total += delta;
    }
  }
  return { total, perCommand };
}
