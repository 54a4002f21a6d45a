// Security alerts to a Slack-compatible webhook (incoming webhooks take {"text": …}), one per
// block put in force: retried with back-off, capped per minute so an attack cannot turn into
// an alert flood, and never in the way of detection (sent in the background, bounded queue).
import type { Logger } from '@sekisho/service-kit/logger';
import type { Detection } from './rules';

export interface AlertEvents {
  alert(result: 'sent' | 'failed' | 'suppressed'): void;
}

export interface AlertOptions {
  url: string;
  maxPerMinute: number;
  /** Attempts after the first, for a network error, a 429 or a 5xx. */
  retries: number;
  /** Back-off of the first retry; doubled each time. */
  retryDelayMs?: number;
  timeoutMs?: number;
  now?: () => number;
  logger: Logger;
  events: AlertEvents;
}

/** The message: what happened and what was done, never a token (the subject is an IP or a uid). */
export function alertText(detection: Detection): string {
  const { block } = detection;
  const action = {
    ip: 'IP blocked',
    user: 'user blocked',
    limit: 'user rate-limited',
    auth: 'additional authentication required',
  }[block.kind];
  const who = block.kind === 'ip' ? `IP ${block.subject}` : `user ${block.subject}`;
  return `[Sekisho] ${detection.severity.toUpperCase()} ${detection.rule}: ${action} — ${who} until ${new Date(block.untilMs).toISOString()}`;
}

export class AlertSender {
  private windowStart = 0;
  private sentInWindow = 0;
  private suppressedInWindow = 0;
  private inFlight = new Set<Promise<void>>();

  constructor(private readonly opts: AlertOptions) {}

  /** Queues the alert (within the cap) and returns at once. */
  notify(detection: Detection): void {
    const now = (this.opts.now ?? Date.now)();
    if (now - this.windowStart >= 60_000) {
      if (this.suppressedInWindow > 0)
        this.opts.logger.warn(
          { category: 'security', event_type: 'alerts_suppressed', suppressed: this.suppressedInWindow },
          'security alerts left out by THREAT_ALERT_MAX_PER_MINUTE (security_events counts every detection)',
        );
      this.windowStart = now;
      this.sentInWindow = 0;
      this.suppressedInWindow = 0;
    }
    if (this.sentInWindow >= this.opts.maxPerMinute) {
      this.suppressedInWindow++;
      this.opts.events.alert('suppressed');
      return;
    }
    this.sentInWindow++;
    const sending = this.send(alertText(detection)).finally(() => this.inFlight.delete(sending));
    this.inFlight.add(sending);
  }

  /** Waits for the alerts under way (shutdown, tests). */
  async drain(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }

  private async send(text: string): Promise<void> {
    const delay = this.opts.retryDelayMs ?? 500;
    let last = '';
    for (let attempt = 0; attempt <= this.opts.retries; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, delay * 2 ** (attempt - 1)));
      try {
        const response = await fetch(this.opts.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ text }),
          signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5_000),
        });
        await response.body?.cancel();
        if (response.ok) {
          this.opts.events.alert('sent');
          return;
        }
        last = `HTTP ${response.status}`;
        // A 4xx other than 429 will not get better by asking again.
        if (response.status < 500 && response.status !== 429) break;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
      }
    }
    this.opts.events.alert('failed');
    this.opts.logger.error(
      { category: 'technical', event_type: 'alert_failed', error_details: last },
      'the security alert webhook did not take the alert',
    );
  }
}
