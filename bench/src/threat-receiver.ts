// npm run bench:threat-receiver — how many Envoy access-log entries per second the threat
// detector absorbs on one core without losing a fact. The detector runs as its own process
// pinned to core 0 (as in production: tsx, real Redis, flushes every 200 ms); this process,
// pinned to core 1 (Redis is not pinned), streams pre-built HTTPAccessLogEntries over real gRPC client
// streams (Envoy keeps one per worker) as fast as flow control lets it. Loss is checked, not
// assumed: entries received must equal entries sent, facts dropped must be 0, and the calls
// counted in Redis must equal the entries that carried a user.

import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort } from '@sekisho/devstack/processes';
import { startRedis } from '@sekisho/devstack/redis';
import type { HTTPAccessLogEntry } from '@sekisho/proto/envoy/data/accesslog/v3/accesslog';
import { AccessLogServiceClient, StreamAccessLogsMessage } from '@sekisho/proto/envoy/service/accesslog/v3/als';
import { threatKeys } from '@sekisho/service-kit/threat-contract';
import { Redis } from 'ioredis';
import { entry, referenceRules } from '../../threat-detector/src/test-entries';
import { assertTwoCores, cores, machine, recordIdleRss, rssMb, runSettings, spawnNodePinned } from './common';
import { pinProcess } from './pin';

const settings = runSettings();
assertTwoCores();
pinProcess(process.pid, cores.loadGenerator);
const durationMs = settings.durationS * 1000 * 2;
const users = 5_000;
const batchSize = 100;
const prefix = 'bench:threats';
// Counting is what is measured, so no rule may fire and turn the run into block writes.
const rules = {
  ...referenceRules,
  suspiciousUsage: { calls: 1_000_000_000, withinMs: 3_600_000, limit: 10, limitWindowMs: 60_000, forMs: 1_800_000 },
  dataExfiltration: { bytes: 1_000_000_000_000, withinMs: 3_600_000, blockMs: 1_800_000 },
};

const redis = await startRedis();
const reader = new Redis(redis.url);
const [grpcPort, adminPort] = [await freePort(), await freePort()];
const detector = await spawnNodePinned('threat-detector', cores.server, 'threat-detector/src/main.ts', [], {
  ...process.env,
  THREAT_GRPC_PORT: String(grpcPort),
  THREAT_ADMIN_PORT: String(adminPort),
  THREAT_REDIS_URL: redis.url,
  THREAT_REDIS_KEY_PREFIX: prefix,
  LOG_LEVEL: 'warn',
});

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(name))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
}

// Batches as Envoy sends them: mostly signed-in calls with bytes, some failed logins.
const batches: HTTPAccessLogEntry[][] = Array.from({ length: 50 }, (_, b) =>
  Array.from({ length: batchSize }, (_, i) => {
    const n = b * batchSize + i;
    return n % 20 === 0
      ? entry({ ip: `203.0.113.${n % 250}`, status: 401, route: 'sign-in', rules })
      : entry({ user: `user-${n % users}`, bytes: 2_048, rules, ip: `198.51.100.${n % 250}` });
  }),
);
const usersPerBatch = batches.map(
  // Every entry but the failed logins carries a verified user.
  (batch) => batch.filter((e) => e.response?.responseCode === 200).length,
);

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function run(streams: number) {
  await reader.flushdb();
  const client = new AccessLogServiceClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure());
  const startEntries = await metric('sekisho_threat_log_entries_total');
  let sent = 0;
  let withUser = 0;
  const deadline = Date.now() + durationMs;
  const started = performance.now();
  const cpuStart = cpuSeconds(detector.pid);
  await Promise.all(
    Array.from(
      { length: streams },
      (_, s) =>
        new Promise<void>((resolve, reject) => {
          const call = client.streamAccessLogs((error) => (error ? reject(error) : resolve()));
          call.write(StreamAccessLogsMessage.fromPartial({ identifier: { node: { id: `bench-${s}` }, logName: 'x' } }));
          let b = s;
          const pump = () => {
            while (Date.now() < deadline) {
              const index = b++ % batches.length;
              sent += batchSize;
              withUser += usersPerBatch[index] ?? 0;
              if (!call.write(StreamAccessLogsMessage.fromPartial({ httpLogs: { logEntry: batches[index] } }))) {
                call.once('drain', pump);
                return;
              }
            }
            call.end();
          };
          pump();
        }),
    ),
  );
  // Received = sent: wait (bounded) for the detector to read what the streams carried.
  let received = 0;
  for (let i = 0; i < 600; i++) {
    received = (await metric('sekisho_threat_log_entries_total')) - startEntries;
    if (received >= sent) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const elapsedS = (performance.now() - started) / 1000;
  // Near 1: the detector's core was the limit; well below: the generator was.
  const detectorCore = (cpuSeconds(detector.pid) - cpuStart) / elapsedS;
  await new Promise((r) => setTimeout(r, 1_000)); // one more flush
  let counted = 0;
  for (let u = 0; u < users; u++) {
    const buckets = await reader.hvals(threatKeys(prefix).counter('calls', `user-${u}`));
    counted += buckets.reduce((sum, v) => sum + Number(v), 0);
  }
  client.close();
  return {
    case: `streams-${streams}`,
    concurrency: streams,
    throughput_per_s: Math.round(received / elapsedS),
    entries_sent: sent,
    entries_received: received,
    calls_sent: withUser,
    calls_counted_in_redis: counted,
    facts_dropped_total: await metric('sekisho_threat_facts_dropped_total'),
    detector_core_utilisation: Math.round(detectorCore * 100) / 100,
    // The detector's ceiling on a whole core, when the generator was the limit.
    entries_per_detector_cpu_second: Math.round(received / elapsedS / Math.max(detectorCore, 0.01)),
    rss_load_mb: rssMb(detector.pid),
  };
}

try {
  await detector.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 30_000, (p) => p.status === 200);
  const idle = recordIdleRss(detector.pid);
  const results = [];
  for (const streams of [1, 4]) {
    const row = await run(streams);
    console.log(JSON.stringify({ ...row, rss_idle_mb: idle }));
    results.push({ ...row, rss_idle_mb: idle });
  }
  // DESIGN.md's shape without latency columns: a client stream has no per-entry answer to time.
  const dir = join(repoRoot, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, 'threat-receiver.json');
  const notes = {
    what: 'access-log entries per second absorbed by one threat-detector process (core 0); the generator on core 1, Redis unpinned',
    batch_entries: batchSize,
    distinct_users: users,
    duration_s: durationMs / 1000,
  };
  const body = { name: 'threat-receiver', ...machine(), cores: { ...cores }, notes, results };
  await writeFile(file, `${JSON.stringify(body, null, 2)}\n`);
  console.log(`wrote ${file}`);
} finally {
  reader.disconnect();
  await detector.stop();
  await redis.stop();
}
