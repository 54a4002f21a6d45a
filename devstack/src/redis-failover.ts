// What the Redis failover tests (Sentinel, Cluster; the rate-limit service's, ext-authz's and
// the threat detector's) share besides the topologies in redis.ts: TLS files the servers and
// their peers accept, and a traffic loop that records every call's outcome during a failover.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitUntil } from './processes';
import type { TlsFiles } from './redis';
import { createCertificateAuthority, issueServerCertificate } from './tls-certs';

/**
 * A new CA and a certificate for 127.0.0.1 and localhost (what the sentinels and cluster nodes
 * announce), written to `dir` as ca.pem, server.pem and server-key.pem. clientAuth too: a
 * replica, a sentinel or a cluster node presents it when it connects to the others.
 */
export async function writeRedisTlsFiles(dir: string, caName = 'sekisho test redis CA'): Promise<TlsFiles> {
  const ca = await createCertificateAuthority(caName);
  const cert = await issueServerCertificate(ca, {
    usages: ['serverAuth', 'clientAuth'],
    commonName: 'localhost',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  const files = {
    caFile: join(dir, 'ca.pem'),
    certFile: join(dir, 'server.pem'),
    keyFile: join(dir, 'server-key.pem'),
  };
  await writeFile(files.caFile, ca.certificatePem);
  await writeFile(files.certFile, cert.certificatePem);
  await writeFile(files.keyFile, cert.privateKeyPem);
  return files;
}

/** One call of the traffic: what it resolved to, or what it rejected with, and how long it took. */
export type TrafficOutcome<T> = { ms: number } & ({ ok: true; value: T } | { ok: false; error: unknown });

export interface TrafficOptions<T> {
  /** Pause between calls (default 10 ms). */
  intervalMs?: number;
  /** Calls at most (default 20,000), so a test that never stops it still ends. */
  maxCalls?: number;
  /** Whether a resolved call is a decision (default: every one is). */
  isDecision?: (value: T) => boolean;
}

export interface Traffic<T> {
  /** Every call's outcome so far, in order. */
  readonly outcomes: readonly TrafficOutcome<T>[];
  /**
   * Waits until `count` calls after position `from` were decisions; a timeout says how many
   * were and what the last failure was (its `code`, when it has one, and message).
   */
  decided(from: number, count: number, timeoutMs?: number): Promise<void>;
  /** Ends the loop after the call in flight. */
  stop(): Promise<void>;
}

/** Calls `call(i)` one at a time, every `intervalMs`, until stopped; each outcome is recorded. */
export function startTraffic<T>(call: (index: number) => Promise<T>, opts: TrafficOptions<T> = {}): Traffic<T> {
  const outcomes: TrafficOutcome<T>[] = [];
  const isDecision = opts.isDecision ?? (() => true);
  let running = true;
  const done = (async () => {
    for (let i = 0; running && i < (opts.maxCalls ?? 20_000); i++) {
      const started = performance.now();
      try {
        const value = await call(i);
        outcomes.push({ ok: true, value, ms: performance.now() - started });
      } catch (error) {
        outcomes.push({ ok: false, error, ms: performance.now() - started });
      }
      await sleep(opts.intervalMs ?? 10);
    }
  })();
  const decisionsSince = (from: number) => outcomes.slice(from).filter((o) => o.ok && isDecision(o.value)).length;
  return {
    outcomes,
    // The default bound is generous: a loaded CI machine once needed more than 30 s after a
    // killed TLS master's failover.
    decided: (from, count, timeoutMs = 60_000) =>
      waitUntil(`${count} decisions after call #${from}`, timeoutMs, {}, async () => {
        if (decisionsSince(from) >= count) return { done: true, value: undefined };
        const last = outcomes.findLast((o) => !o.ok);
        const failure = last && !last.ok ? `; last failure ${describeFailure(last.error)}` : '';
        return { done: false, detail: `${decisionsSince(from)} so far of ${outcomes.length - from}${failure}` };
      }),
    stop: async () => {
      running = false;
      await done;
    },
  };
}

function describeFailure(error: unknown): string {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return `${typeof code === 'string' ? `${code}: ` : ''}${String(message ?? error)}`;
}
