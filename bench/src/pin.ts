import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

// Pins processes this benchmark started indirectly (devstack's startStack spawns them) to a
// core after the fact: every descendant of this process, every thread (taskset -a).

/** The parent pid from the text of /proc/<pid>/stat (the field after the parenthesised name). */
export function parentPidOf(stat: string): number {
  const afterName = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(afterName[1]);
}

export function descendantsOf(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const parent = parentPidOf(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // The process ended while the table was read.
    }
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift() as number) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

export function pinProcess(pid: number, core: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', core, String(pid)], { stdio: 'ignore' });
}

/** The command line of a process (for saying what was pinned where). */
export function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(0, 4).join(' ');
  } catch {
    return '(gone)';
  }
}

/** Which part of the Sekisho stack a command line is, or undefined for anything else. */
export function gatewayProcessName(command: string): string | undefined {
  // Under tsx <service>/src/main.ts; compiled (what the benchmarks run) dist/<service>/main.js.
  const source = /(?:^|\s)(?:\S*\/)?([a-z-]+)\/src\/main\.ts(?:\s|$)/.exec(command);
  if (source) return source[1];
  const compiled = /(?:^|\s)(?:\S*\/)?dist\/([a-z-]+)\/main\.js(?:\s|$)/.exec(command);
  if (compiled) return compiled[1];
  const [program] = command.split(' ');
  if (program?.endsWith('/envoy')) return 'envoy';
  if (program?.endsWith('/redis-server')) return 'redis-server';
  return undefined;
}
