// The receiver's core, without gRPC: entries in, facts buffered, flushed to Redis in one
// pipeline per interval, crossings turned into blocks. Clock and Redis are passed in.
import type { HTTPAccessLogEntry } from '@sekisho/proto/envoy/data/accesslog/v3/accesslog';
import type { Logger } from '@sekisho/service-kit/logger';
import { type ThreatRules, threatRulesSchema, threatRulesTag } from '@sekisho/service-kit/threat-contract';
import type { Redis } from 'ioredis';
import { FactBuffer, type PendingCount } from './buffer';
import { type FailureKind, factsOf, type SignInFact } from './facts';
import { judgeSignIn, type Place } from './geo';
import { addCounts, claimSignIn, liftBlock, putBlock, recordPlace } from './redis-store';
import { type Detection, detect, geoAnomalyDetection, windowOf } from './rules';

export interface DetectorEvents {
  entries(count: number): void;
  factsDropped(count: number): void;
  failedLogin(kind: FailureKind): void;
  flushed(result: 'ok' | 'error', counts: number): void;
  /** True while flushes fail: new detections wait, known blocks stay with ext-authz. */
  paused(paused: boolean): void;
  detection(detection: Detection, written: boolean): void;
  /** A sign-in judged by the geo anomaly rule (or left unjudged: no place known for it). */
  signIn(result: SignInResult): void;
  rulesRejected(): void;
}

/** first: no usual place yet; second_factor: trusted as shown (clears the state). */
export type SignInResult = 'first' | 'usual' | 'far' | 'second_factor' | 'unlocated';

/** The GeoIP database, by client address (geoip.ts); absent = only the CDN's headers. */
export interface GeoIpLookup {
  lookup(ip: string): Place | undefined;
}

export interface DetectorOptions {
  geoip?: GeoIpLookup;
  /** Told of every block put in force (the alert webhook); absent = no alerts. */
  alerts?: { notify(detection: Detection): void };
  redis: Redis;
  keyPrefix: string;
  /** Distinct (counter, subject) pairs held between flushes. */
  maxPendingKeys: number;
  now: () => number;
  logger: Logger;
  events: DetectorEvents;
}

/** The reference design's response_actions, by the kind of block that carries one out. */
const actionNames: Record<Detection['block']['kind'], string> = {
  ip: 'block_ip_temporary',
  user: 'block_user_temporary',
  limit: 'rate_limit_aggressive',
  auth: 'require_additional_auth',
};

export class Detector {
  private readonly buffer: FactBuffer;
  /** Per user, the newest auth_time seen since the last flush (with that request's place). */
  private signIns = new Map<string, SignInFact>();
  private rulesText: string | undefined;
  private rules: ThreatRules | undefined;
  private flushing: Promise<void> | undefined;
  private paused = false;
  private droppedSinceLog = 0;

  constructor(private readonly opts: DetectorOptions) {
    this.buffer = new FactBuffer(opts.maxPendingKeys);
  }

  /** Takes what one entry says; never waits and never throws. */
  ingest(entry: HTTPAccessLogEntry): void {
    const rules = this.rulesOf(entry);
    if (!rules) return;
    const { facts, failure, signIn } = factsOf(entry, rules);
    if (failure) this.opts.events.failedLogin(failure);
    let dropped = 0;
    for (const fact of facts) if (!this.buffer.add(fact)) dropped++;
    if (signIn && !this.addSignIn(signIn)) dropped++;
    if (dropped > 0) this.dropped(dropped);
  }

  get pendingKeys(): number {
    return this.buffer.size + this.signIns.size;
  }

  /** Keeps the newest auth_time per user; false when a new user's would pass the bound. */
  private addSignIn(signIn: SignInFact): boolean {
    const known = this.signIns.get(signIn.user);
    if (known) {
      if (signIn.authTimeS > known.authTimeS) this.signIns.set(signIn.user, signIn);
      return true;
    }
    if (this.signIns.size >= this.opts.maxPendingKeys) return false;
    this.signIns.set(signIn.user, signIn);
    return true;
  }

  /** Sends what is pending; one flush at a time (a second call waits for the running one). */
  flush(): Promise<void> {
    this.flushing ??= this.flushOnce().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async flushOnce(): Promise<void> {
    const rules = this.rules;
    const pending = this.buffer.take();
    const signIns = [...this.signIns.values()];
    this.signIns = new Map();
    if (!rules) return;
    if (pending.length > 0) await this.flushCounts(rules, pending);
    if (signIns.length > 0) await this.judgeSignIns(rules, signIns);
  }

  private async flushCounts(rules: ThreatRules, pending: PendingCount[]): Promise<void> {
    const counts = pending.flatMap((count) => {
      const window = windowOf(count.counter, rules);
      return window ? [{ ...count, window }] : [];
    });
    const nowMs = this.opts.now();
    let updates: Awaited<ReturnType<typeof addCounts>>;
    try {
      updates = await addCounts(this.opts.redis, this.opts.keyPrefix, counts, nowMs);
    } catch (error) {
      this.opts.events.flushed('error', counts.length);
      this.restore(pending);
      this.setPaused(true, error);
      return;
    }
    this.opts.events.flushed('ok', counts.length);
    this.setPaused(false);
    for (const update of updates) {
      const detection = detect(update.counter, update.subject, update.before, update.after, rules, nowMs);
      if (detection) await this.act(detection);
    }
  }

  /**
   * Each new sign-in's place against the user's usual ones (Redis decides which receiver sees
   * it first). A second factor makes the place usual and lifts the state; a far place without
   * one is not remembered. Redis failing pauses detection; what was not judged waits.
   */
  private async judgeSignIns(rules: ThreatRules, signIns: SignInFact[]): Promise<void> {
    const rule = rules.geoAnomaly;
    if (!rule) return;
    const { redis, keyPrefix: prefix } = this.opts;
    for (const [index, signIn] of signIns.entries()) {
      const nowMs = this.opts.now();
      try {
        const usual = await claimSignIn(redis, prefix, signIn.user, signIn.authTimeS, rule.rememberMs);
        if (usual === undefined) continue;
        const place = signIn.place ?? (signIn.ip === '' ? undefined : this.opts.geoip?.lookup(signIn.ip));
        const here = place && { latitude: place.latitude, longitude: place.longitude, atMs: nowMs };
        if (signIn.secondFactor) {
          // Lifted wherever it happened: a second factor answers the state even from a place unknown.
          this.opts.events.signIn(here ? 'second_factor' : 'unlocated');
          if (here) await recordPlace(redis, prefix, signIn.user, here, rule);
          if (await liftBlock(redis, prefix, `auth:${signIn.user}`))
            this.opts.logger.info(
              {
                category: 'security',
                event_type: 'additional_auth_completed',
                rule: 'geo_anomaly',
                user_id: signIn.user,
              },
              'a second factor lifted the additional-authentication state',
            );
          continue;
        }
        if (!place || !here) {
          this.opts.events.signIn('unlocated');
          continue;
        }
        const verdict = judgeSignIn(place, usual, rule, nowMs);
        this.opts.events.signIn(verdict.kind);
        if (verdict.kind !== 'far') {
          await recordPlace(redis, prefix, signIn.user, here, rule);
          continue;
        }
        const detection = geoAnomalyDetection(signIn.user, signIn.authTimeS, rules, nowMs);
        if (detection) await this.act(detection, { distance_km: Math.round(verdict.nearestKm), place: place.source });
      } catch (error) {
        // Not judged yet: back in the queue (its auth_time may already be claimed; a retry then
        // finds it seen, which loses one judgement rather than denying anyone).
        for (const waiting of signIns.slice(index)) this.addSignIn(waiting);
        this.setPaused(true, error);
        return;
      }
    }
    this.setPaused(false);
  }

  private async act(detection: Detection, details: Record<string, unknown> = {}): Promise<void> {
    let written = false;
    try {
      written = await putBlock(this.opts.redis, this.opts.keyPrefix, detection.block);
    } catch (error) {
      this.opts.logger.error(
        {
          category: 'security',
          event_type: 'threat_action_failed',
          rule: detection.rule,
          error_details: String(error),
        },
        'a detected threat could not be recorded: Redis refused the block',
      );
      return;
    }
    this.opts.events.detection(detection, written);
    if (written) this.opts.alerts?.notify(detection);
    const { block } = detection;
    this.opts.logger.warn(
      {
        category: 'security',
        event_type: 'threat_detected',
        rule: detection.rule,
        severity: detection.severity,
        action: actionNames[block.kind],
        ...details,
        // The subject is an IP or a user id, never a token; both are what an operator unblocks by.
        ...(block.kind === 'ip' ? { ip_address: block.subject } : { user_id: block.subject }),
        until: new Date(block.untilMs).toISOString(),
        already_in_force: !written,
      },
      `threat detected: ${detection.rule}`,
    );
  }

  /** Counts that could not be sent go back, within the bound, to be sent by the next flush. */
  private restore(pending: PendingCount[]): void {
    let dropped = 0;
    for (const count of pending) if (!this.buffer.add(count)) dropped++;
    if (dropped > 0) this.dropped(dropped);
  }

  private dropped(count: number): void {
    this.opts.events.factsDropped(count);
    // One log line per burst of drops, not per fact: the metric has the count.
    if (this.droppedSinceLog === 0)
      this.opts.logger.warn(
        { category: 'technical', event_type: 'threat_facts_dropped', max_pending_keys: this.opts.maxPendingKeys },
        'threat facts dropped: the buffer is full (the metric counts them)',
      );
    this.droppedSinceLog += count;
  }

  private setPaused(paused: boolean, error?: unknown): void {
    if (!paused) this.droppedSinceLog = 0;
    if (paused === this.paused) return;
    this.paused = paused;
    this.opts.events.paused(paused);
    if (paused)
      this.opts.logger.error(
        { category: 'security', event_type: 'threat_detection_paused', error_details: String(error) },
        'threat detection paused: Redis is unavailable (blocks already in force stay enforced)',
      );
    else
      this.opts.logger.info(
        { category: 'security', event_type: 'threat_detection_resumed' },
        'threat detection resumed',
      );
  }

  private rulesOf(entry: HTTPAccessLogEntry): ThreatRules | undefined {
    const text = entry.commonProperties?.customTags[threatRulesTag];
    if (text === undefined) return undefined;
    if (text === this.rulesText) return this.rules;
    this.rulesText = text;
    let parsed: ReturnType<typeof threatRulesSchema.safeParse>;
    try {
      parsed = threatRulesSchema.safeParse(JSON.parse(text));
    } catch {
      parsed = threatRulesSchema.safeParse(undefined);
    }
    if (!parsed.success) {
      this.opts.events.rulesRejected();
      this.opts.logger.error(
        { category: 'technical', event_type: 'threat_rules_rejected', error_details: parsed.error.message },
        `the access log's ${threatRulesTag} tag is not valid rules; keeping the last valid ones`,
      );
      return this.rules;
    }
    this.rules = parsed.data;
    return this.rules;
  }
}
