import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOnPath } from '@sekisho/devstack/host';
import { type LatencySummary, summarizeLatencies } from './stats';

// h2load (Debian's nghttp2-client) as the load generator, pinned to its own core. Throughput
// comes from its summary; latency percentiles from its per-request log (--log-file), since
// h2load itself prints only min/max/mean.

export const h2loadInstallHint =
  'h2load is needed for the benchmarks: `npm run setup` installs it as root on Debian/Ubuntu ' +
  '(apt-get install nghttp2-client), or install nghttp2-client yourself.';

export function findH2load(): string {
  const found = findOnPath('h2load');
  if (!found) throw new Error(h2loadInstallHint);
  return found;
}

export interface H2loadSummary {
  durationS: number;
  requestsPerS: number;
  total: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  status2xx: number;
}

/** Parses h2load's printed summary; throws naming the line it could not find. */
export function parseH2loadOutput(text: string): H2loadSummary {
  const finished = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(text);
  if (!finished) throw new Error(`h2load output: no "finished in ..." line in:\n${text.slice(0, 2000)}`);
  const requests =
    /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      text,
    );
  if (!requests) throw new Error(`h2load output: no "requests: ..." line in:\n${text.slice(0, 2000)}`);
  const codes = /status codes: (\d+) 2xx/.exec(text);
  if (!codes) throw new Error(`h2load output: no "status codes: ..." line in:\n${text.slice(0, 2000)}`);
  const duration = Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1);
  return {
    durationS: duration,
    requestsPerS: Number(finished[3]),
    total: Number(requests[1]),
    succeeded: Number(requests[2]),
    failed: Number(requests[3]),
    errored: Number(requests[4]),
    timeout: Number(requests[5]),
    status2xx: Number(codes[1]),
  };
}

/** Latencies in ms from h2load's --log-file: start µs, status, elapsed µs per line (tab-separated). */
export function parseH2loadLog(text: string): { latenciesMs: number[]; statuses: Map<number, number> } {
  const latenciesMs: number[] = [];
  const statuses = new Map<number, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [, status, elapsed] = line.split('\t');
    const us = Number(elapsed);
    const code = Number(status);
    if (!Number.isFinite(us) || !Number.isFinite(code)) throw new Error(`h2load log: unreadable line "${line}"`);
    latenciesMs.push(us / 1000);
    statuses.set(code, (statuses.get(code) ?? 0) + 1);
  }
  return { latenciesMs, statuses };
}

export interface LoadOptions {
  url: string;
  /** Streams in flight at once, over `connections` connections (default one connection). */
  concurrency: number;
  connections?: number;
  durationS: number;
  warmupS: number;
  /** Fixed request rate per connection (h2load --rps); omitted = as fast as it answers. */
  ratePerConnection?: number;
  /** HTTP/1.1 instead of HTTP/2 (h2load --h1); one request in flight per connection. */
  h1?: boolean;
  /** A request body file (POST), e.g. a framed gRPC message. */
  bodyFile?: string;
  headers?: Record<string, string>;
  /** The cores h2load may use (taskset -c). */
  cores: string;
}

export interface LoadResult extends LatencySummary {
  throughput_per_s: number;
  requests: number;
  failed: number;
  non_2xx: number;
}

export async function runH2load(opts: LoadOptions): Promise<LoadResult> {
  const h2load = findH2load();
  const connections = opts.connections ?? 1;
  const logFile = join(tmpdir(), `sekisho-bench-h2load-${process.pid}-${Date.now()}.log`);
  const perConnection = Math.max(1, Math.ceil(opts.concurrency / connections));
  const args = [
    '-c',
    String(connections),
    '-m',
    String(perConnection),
    '-t',
    '1',
    '-D',
    `${Math.round(opts.durationS * 1000)}ms`,
    '--warm-up-time',
    `${Math.round(opts.warmupS * 1000)}ms`,
    `--log-file=${logFile}`,
    ...(opts.h1 ? ['--h1'] : []),
    ...(opts.ratePerConnection ? ['--rps', String(opts.ratePerConnection)] : []),
    ...(opts.bodyFile ? ['-d', opts.bodyFile] : []),
    ...Object.entries(opts.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]),
    opts.url,
  ];
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(
      'taskset',
      ['-c', opts.cores, h2load, ...args],
      { timeout: (opts.durationS + opts.warmupS + 30) * 1000, maxBuffer: 16 * 1024 * 1024 },
      (error, out, err) =>
        error ? reject(new Error(`h2load failed: ${error.message}\n${out}\n${err}`)) : resolve(out),
    ),
  );
  try {
    const summary = parseH2loadOutput(stdout);
    const log = parseH2loadLog(await readFile(logFile, 'utf8'));
    return {
      throughput_per_s: Math.round(summary.requestsPerS),
      requests: summary.total,
      failed: summary.failed + summary.errored + summary.timeout,
      non_2xx: summary.total - summary.status2xx,
      ...summarizeLatencies(log.latenciesMs),
    };
  } finally {
    await rm(logFile, { force: true });
  }
}
