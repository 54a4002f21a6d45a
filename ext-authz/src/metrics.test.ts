import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createExtAuthzMetrics } from './metrics';

// The per-Check series are summed outside prom-client and handed to it when scraped: the
// exposition must say exactly what prom-client's own inc and observe would have said.

describe('per-Check metrics', () => {
  it('counts checks and failures and fills the duration histogram as prom-client would', async () => {
    const registry = new Registry();
    const metrics = createExtAuthzMetrics(registry);
    const durations = [0.00005, 0.0001, 0.0003, 0.002, 0.002, 0.7, 3];
    for (const seconds of durations) metrics.checkFinished('allow', 'OK', seconds);
    metrics.checkFinished('deny', 'INVALID_TOKEN', 0.004);
    metrics.checkFinished('deny', 'INVALID_TOKEN', 0.004);
    metrics.checkFinished('deny', 'MISSING_TOKEN', 0.0001);
    metrics.authFailed('signature_invalid');
    metrics.authFailed('signature_invalid');
    metrics.authFailed('no_bearer_token');

    const text = await registry.metrics();
    expect(text).toContain('sekisho_ext_authz_checks_total{result="allow",code="OK"} 7');
    expect(text).toContain('sekisho_ext_authz_checks_total{result="deny",code="INVALID_TOKEN"} 2');
    expect(text).toContain('sekisho_ext_authz_checks_total{result="deny",code="MISSING_TOKEN"} 1');
    expect(text).toContain('sekisho_ext_authz_auth_failures_total{reason="signature_invalid"} 2');
    expect(text).toContain('sekisho_ext_authz_auth_failures_total{reason="no_bearer_token"} 1');

    // The same observations through prom-client's own Histogram, for the expected lines.
    const reference = new Registry();
    const { Histogram } = await import('prom-client');
    const histogram = new Histogram({
      name: 'sekisho_ext_authz_check_duration_seconds',
      help: 'Time to answer a Check call, token verification included.',
      labelNames: ['result'] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [reference],
    });
    for (const seconds of durations) histogram.observe({ result: 'allow' }, seconds);
    histogram.observe({ result: 'deny' }, 0.004);
    histogram.observe({ result: 'deny' }, 0.004);
    histogram.observe({ result: 'deny' }, 0.0001);
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_check_duration_seconds')).toBe(
      await reference.getSingleMetricAsString('sekisho_ext_authz_check_duration_seconds'),
    );
    // A second scrape says the same (the sums are handed over, not moved).
    expect(await registry.metrics()).toBe(text);
  });

  it('keeps counting across scrapes and aggregates like prom-client metrics (workers)', async () => {
    const registry = new Registry();
    const metrics = createExtAuthzMetrics(registry);
    metrics.checkFinished('allow', 'OK', 0.001);
    await registry.metrics();
    metrics.checkFinished('allow', 'OK', 0.001);
    const json = await registry.getMetricsAsJSON();
    const checks = json.find((metric) => metric.name === 'sekisho_ext_authz_checks_total');
    expect(checks?.values).toEqual([{ value: 2, labels: { result: 'allow', code: 'OK' } }]);
    const durations = json.find((metric) => metric.name === 'sekisho_ext_authz_check_duration_seconds');
    const values = (durations?.values ?? []) as Array<{ value: number; metricName?: string }>;
    expect(values.find((v) => v.metricName?.endsWith('_count'))?.value).toBe(2);
  });
});
