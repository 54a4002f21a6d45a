// The mesh CA: hands each workload identity its certificate and the trust bundle as the two SDS
// Secrets the mesh views name (contract.ts), and says when they must be served again.
//
// One certificate per SPIFFE id is kept and returned until it reaches `renewAt` of its lifetime
// (default half, as Istio does). Then it is dropped and the rotation listeners fire: they serve
// the views again, whose next secretsFor issues the new certificate. Envoy swaps an SDS secret
// in place (open connections keep their handshake, new ones get the new certificate), so
// nothing is dropped. An identity nobody asks for after that is simply not issued again, which
// bounds what is kept to the identities the views still name. The CA files are polled; a good
// new CA re-issues everything, a broken one is logged and the last good CA kept.
import { unwatchFile, watchFile } from 'node:fs';
import type { Logger } from '@sekisho/service-kit/logger';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Resource } from '../xds/resources';
import { type CaMaterial, type CaSource, caFilesOf, loadCaMaterial, subjectOf } from './ca-material';
import type { WorkloadSecrets } from './contract';
import { type IssuedCertificate, issueWorkloadCertificate } from './issue';
import { certificateSecret, trustBundleSecret } from './secrets';
import { parseSpiffeId, SpiffeIdError } from './spiffe';

/** Runs `run` after `delayMs`; returns a function that cancels it. Injected by tests with a fake clock. */
export type Schedule = (delayMs: number, run: () => void) => () => void;

export interface MeshCaOptions {
  source: CaSource;
  /** Only ids of this trust domain are issued. */
  trustDomain: string;
  logger: Logger;
  registry: Registry;
  /** Lifetime of a workload certificate. Default 1 h. */
  ttlMs?: number;
  /** Fraction of the lifetime after which a certificate is replaced. Default 0.5. */
  renewAt?: number;
  /** notBefore is set this far in the past for peers whose clocks run behind. Default 5 min, at most a quarter of the TTL. */
  backdateMs?: number;
  /** How often the CA files are checked for a change. Default 5 s; 0 turns polling off. */
  pollIntervalMs?: number;
  now?: () => number;
  schedule?: Schedule;
}

interface Issued {
  certificate: IssuedCertificate;
  /** When it is replaced (ms since the epoch). */
  renewAtMs: number;
  /** Its Secret, packed once. */
  secret: Resource;
}

const defaultSchedule: Schedule = (delayMs, run) => {
  // setTimeout overflows past 2^31-1 ms (fires at once); a certificate renewed that late is re-armed.
  const timer = setTimeout(run, Math.min(Math.max(0, delayMs), 2 ** 31 - 1));
  timer.unref();
  return () => clearTimeout(timer);
};

export class MeshCa implements WorkloadSecrets {
  private ca: CaMaterial;
  private readonly issued = new Map<string, Issued>();
  private readonly listeners: Array<() => void> = [];
  private readonly log: Logger;
  private readonly ttlMs: number;
  private readonly renewAt: number;
  private readonly backdateMs: number;
  private readonly now: () => number;
  private readonly schedule: Schedule;
  private cancelTimer?: () => void;
  private timerAtMs?: number;
  private trustBundle: Resource;
  private stopWatching?: () => void;
  private readonly metrics: {
    issued: Counter;
    rotations: Counter<'reason'>;
    loadErrors: Counter;
  };

  /** Loads and checks the CA (a ConfigError naming the variable if it is unusable) and starts polling its files. */
  constructor(private readonly opts: MeshCaOptions) {
    this.now = opts.now ?? Date.now;
    this.schedule = opts.schedule ?? defaultSchedule;
    this.ttlMs = opts.ttlMs ?? 60 * 60_000;
    this.renewAt = opts.renewAt ?? 0.5;
    if (!(this.renewAt > 0 && this.renewAt < 1))
      throw new RangeError(`renewAt must be between 0 and 1, got ${this.renewAt}`);
    this.backdateMs = Math.min(opts.backdateMs ?? 5 * 60_000, this.ttlMs / 4);
    this.log = opts.logger.child({ category: 'security', component: 'mesh-ca' });
    // Checked before any metric is registered: a bad CA at start-up stops the process.
    this.ca = loadCaMaterial(opts.source, new Date(this.now()));
    this.trustBundle = trustBundleSecret(this.ca.bundlePem);
    this.metrics = {
      loadErrors: new Counter({
        name: 'sekisho_mesh_ca_load_errors_total',
        help: 'Mesh CA files that changed but could not be used (the last good CA is kept)',
        registers: [opts.registry],
      }),
      issued: new Counter({
        name: 'sekisho_mesh_certificates_issued_total',
        help: 'Workload certificates the mesh CA issued',
        registers: [opts.registry],
      }),
      rotations: new Counter({
        name: 'sekisho_mesh_certificate_rotations_total',
        help: 'Times the workload certificates handed out were replaced, by reason (expiry: reached renewAt of their lifetime; ca_changed: new CA files)',
        labelNames: ['reason'],
        registers: [opts.registry],
      }),
    };
    const self = this;
    new Gauge({
      name: 'sekisho_mesh_certificate_earliest_expiry_seconds',
      help: 'Seconds until the earliest notAfter of the workload certificates handed out (NaN when none is)',
      registers: [opts.registry],
      collect() {
        const earliest = Math.min(...[...self.issued.values()].map((i) => i.certificate.notAfter.getTime()));
        // NaN while none is handed out: no alert on it, and no false "expires now".
        this.set(Number.isFinite(earliest) ? (earliest - self.now()) / 1000 : Number.NaN);
      },
    });
    new Gauge({
      name: 'sekisho_mesh_ca_expiry_seconds',
      help: 'Seconds until the mesh CA (the earliest notAfter of its signing chain) expires',
      registers: [opts.registry],
      collect() {
        this.set((self.ca.notAfter.getTime() - self.now()) / 1000);
      },
    });
    this.log.info(
      {
        event_type: 'mesh_ca_loaded',
        issuer: subjectOf(this.ca.signer),
        ca_not_after: this.ca.notAfter.toISOString(),
        trust_domain: opts.trustDomain,
        ttl_ms: this.ttlMs,
        renew_at: this.renewAt,
      },
      'mesh CA loaded',
    );
    if ((opts.pollIntervalMs ?? 5_000) > 0) this.watchFiles(opts.pollIntervalMs ?? 5_000);
  }

  secretsFor(spiffeId: string): Resource[] {
    const { trustDomain } = parseSpiffeId(spiffeId);
    if (trustDomain !== this.opts.trustDomain)
      throw new SpiffeIdError(spiffeId, `the mesh CA issues for the trust domain ${this.opts.trustDomain} only`);
    const now = this.now();
    let entry = this.issued.get(spiffeId);
    if (!entry || entry.renewAtMs <= now) entry = this.issue(spiffeId, now);
    return [entry.secret, this.trustBundle];
  }

  onRotation(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** The certificate handed out now for `spiffeId`, if any (for status and tests). */
  current(spiffeId: string): IssuedCertificate | undefined {
    return this.issued.get(spiffeId)?.certificate;
  }

  /** The identities holding a certificate now. */
  identities(): string[] {
    return [...this.issued.keys()];
  }

  /**
   * Re-reads the CA files now (the poll calls this on a change): a usable CA replaces the current
   * one and every certificate is issued again; an unusable one is logged and changes nothing.
   */
  reloadCa(): boolean {
    let next: CaMaterial;
    try {
      next = loadCaMaterial(this.opts.source, new Date(this.now()));
    } catch (error) {
      this.metrics.loadErrors.inc();
      this.log.error(
        { event_type: 'mesh_ca_invalid', error_details: error instanceof Error ? error.message : String(error) },
        'mesh CA files changed but are not usable; still issuing with the last good CA',
      );
      return false;
    }
    if (next.fingerprint === this.ca.fingerprint && next.signerKey.equals(this.ca.signerKey)) return true;
    this.ca = next;
    this.trustBundle = trustBundleSecret(next.bundlePem);
    this.log.info(
      { event_type: 'mesh_ca_reloaded', issuer: subjectOf(next.signer), ca_not_after: next.notAfter.toISOString() },
      'mesh CA files changed; re-issuing every workload certificate',
    );
    this.rotate([...this.issued.keys()], 'ca_changed');
    return true;
  }

  /** Stops polling the files and the rotation timer. */
  close(): void {
    this.stopWatching?.();
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private issue(spiffeId: string, now: number): Issued {
    const certificate = issueWorkloadCertificate(this.ca, spiffeId, {
      now: new Date(now),
      ttlMs: this.ttlMs,
      backdateMs: this.backdateMs,
    });
    // The lifetime counted from now, not from the backdated notBefore. Cut short by the CA's own
    // expiry, it is still renewed no more often than a full-length one would be (no busy loop
    // re-issuing certificates of an expired CA).
    const lifetime = certificate.notAfter.getTime() - now;
    // notAfter is whole seconds (below now + TTL by up to a second): only the CA's own expiry
    // cutting the certificate short is worth a warning.
    if (this.ca.notAfter.getTime() < now + this.ttlMs)
      this.log.warn(
        { event_type: 'mesh_ca_expiring', spiffe_id: spiffeId, ca_not_after: this.ca.notAfter.toISOString() },
        'the mesh CA expires before a full-length workload certificate would: renew the CA',
      );
    const entry: Issued = {
      certificate,
      renewAtMs: now + Math.max(lifetime * this.renewAt, Math.min(60_000, this.ttlMs * this.renewAt)),
      secret: certificateSecret(certificate),
    };
    this.issued.set(spiffeId, entry);
    this.metrics.issued.inc();
    this.log.info(
      {
        event_type: 'mesh_certificate_issued',
        spiffe_id: spiffeId,
        serial: certificate.serialNumber,
        not_after: certificate.notAfter.toISOString(),
        renew_at: new Date(entry.renewAtMs).toISOString(),
      },
      'workload certificate issued',
    );
    this.arm();
    return entry;
  }

  /** One timer, for the earliest renewal. */
  private arm(): void {
    const earliest = Math.min(...[...this.issued.values()].map((i) => i.renewAtMs));
    if (!Number.isFinite(earliest)) {
      this.cancelTimer?.();
      this.cancelTimer = undefined;
      this.timerAtMs = undefined;
      return;
    }
    if (this.cancelTimer && this.timerAtMs === earliest) return;
    this.cancelTimer?.();
    this.timerAtMs = earliest;
    this.cancelTimer = this.schedule(earliest - this.now(), () => this.onTimer());
  }

  private onTimer(): void {
    this.cancelTimer = undefined;
    this.timerAtMs = undefined;
    const now = this.now();
    const due = [...this.issued].filter(([, entry]) => entry.renewAtMs <= now).map(([id]) => id);
    if (due.length > 0) this.rotate(due, 'expiry');
    else this.arm();
  }

  /** Drops the certificates of `ids` and tells the listeners, whose views then ask again. */
  private rotate(ids: string[], reason: 'expiry' | 'ca_changed'): void {
    for (const id of ids) {
      this.log.info(
        {
          event_type: 'mesh_certificate_rotating',
          spiffe_id: id,
          serial: this.issued.get(id)?.certificate.serialNumber,
          reason,
        },
        'workload certificate due for rotation',
      );
      this.issued.delete(id);
    }
    this.metrics.rotations.inc({ reason }, ids.length);
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (error) {
        this.log.error(
          { event_type: 'mesh_rotation_listener_failed', error_details: String(error) },
          'a rotation listener failed',
        );
      }
    }
    this.arm();
  }

  private watchFiles(intervalMs: number): void {
    const files = Object.values(caFilesOf(this.opts.source)).map(({ file }) => file);
    // A Secret volume swaps a `..data` symlink: watchFile stats through it, so the swap is seen.
    const onChange = (current: { mtimeMs: number; ino: number }, previous: { mtimeMs: number; ino: number }) => {
      if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino) this.reloadCa();
    };
    for (const file of files) watchFile(file, { interval: intervalMs, persistent: false }, onChange);
    this.stopWatching = () => {
      for (const file of files) unwatchFile(file, onChange);
    };
  }
}
