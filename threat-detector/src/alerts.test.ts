import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '@sekisho/service-kit/logger';
import { afterEach, describe, expect, it } from 'vitest';
import { AlertSender, alertText } from './alerts';
import type { Detection } from './rules';

// The webhook against a real local HTTP server that answers what each test scripts.

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

async function webhook(statuses: number[]) {
  const bodies: unknown[] = [];
  const server = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk) => {
      text += chunk;
    });
    request.on('end', () => {
      bodies.push(JSON.parse(text));
      response.statusCode = statuses.shift() ?? 200;
      response.end();
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies };
}

const detection: Detection = {
  rule: 'brute_force',
  severity: 'high',
  block: { kind: 'ip', subject: '198.51.100.1', rule: 'brute_force', severity: 'high', untilMs: Date.UTC(2026, 0, 1) },
};

function sender(url: string, opts: { maxPerMinute?: number; retries?: number; now?: () => number } = {}) {
  const results: string[] = [];
  const alerts = new AlertSender({
    url,
    maxPerMinute: opts.maxPerMinute ?? 10,
    retries: opts.retries ?? 3,
    retryDelayMs: 5,
    ...(opts.now ? { now: opts.now } : {}),
    logger: createLogger('threat-detector', { level: 'silent' }),
    events: { alert: (result) => results.push(result) },
  });
  return { alerts, results };
}

describe('AlertSender', () => {
  it('posts Slack-compatible JSON naming the rule, the action and the expiry', async () => {
    const hook = await webhook([]);
    const { alerts, results } = sender(hook.url);
    alerts.notify(detection);
    await alerts.drain();
    expect(hook.bodies).toEqual([{ text: alertText(detection) }]);
    expect(alertText(detection)).toBe(
      '[Sekisho] HIGH brute_force: IP blocked — IP 198.51.100.1 until 2026-01-01T00:00:00.000Z',
    );
    expect(results).toEqual(['sent']);
  });

  it('retries a 503 and a 429, and gives up after the retries', async () => {
    const retried = await webhook([503, 429]);
    const first = sender(retried.url);
    first.alerts.notify(detection);
    await first.alerts.drain();
    expect(retried.bodies).toHaveLength(3);
    expect(first.results).toEqual(['sent']);

    const down = await webhook([500, 500, 500]);
    const second = sender(down.url, { retries: 2 });
    second.alerts.notify(detection);
    await second.alerts.drain();
    expect(down.bodies).toHaveLength(3);
    expect(second.results).toEqual(['failed']);
  });

  it('does not retry a 400', async () => {
    const hook = await webhook([400]);
    const { alerts, results } = sender(hook.url);
    alerts.notify(detection);
    await alerts.drain();
    expect(hook.bodies).toHaveLength(1);
    expect(results).toEqual(['failed']);
  });

  it('sends at most maxPerMinute alerts a minute and counts the rest', async () => {
    const hook = await webhook([]);
    const clock = { now: 1_700_000_000_000 };
    const { alerts, results } = sender(hook.url, { maxPerMinute: 2, now: () => clock.now });
    for (let i = 0; i < 4; i++) alerts.notify(detection);
    clock.now += 60_000;
    alerts.notify(detection);
    await alerts.drain();
    expect(hook.bodies).toHaveLength(3);
    expect(results.filter((r) => r === 'suppressed')).toHaveLength(2);
    expect(results.filter((r) => r === 'sent')).toHaveLength(3);
  });
});
