import { Counter, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ConfigError } from './config';
import { aggregateWorkerMetrics, processesPerReplica, workerCountFrom } from './workers';

// The processes themselves (a primary, workers over real sockets, a worker killed, SIGTERM
// with calls in flight) are tested with the rate-limit service: ratelimit-service/src/workers.test.ts.

describe('workerCountFrom', () => {
  it.each([
    [undefined, 1],
    ['', 1],
    ['1', 1],
    ['4', 4],
    ['64', 64],
  ])('reads SEKISHO_WORKERS=%j as %i', (value, count) => {
    expect(workerCountFrom(value === undefined ? {} : { SEKISHO_WORKERS: value })).toBe(count);
  });

  it.each(['0', '65', '2.5', ' 2', 'auto', '-1', '1e1'])('refuses SEKISHO_WORKERS=%j, naming the variable', (value) => {
    expect(() => workerCountFrom({ SEKISHO_WORKERS: value })).toThrow(ConfigError);
    expect(() => workerCountFrom({ SEKISHO_WORKERS: value })).toThrow(/SEKISHO_WORKERS/);
  });

  it('counts one process per replica outside a cluster worker, whatever the variable says', () => {
    expect(processesPerReplica({ SEKISHO_WORKERS: '4', SEKISHO_WORKER_INDEX: '0' })).toBe(1);
  });
});

describe('aggregateWorkerMetrics', () => {
  const worker = (calls: number, policyVersion: string, redisUp: number) => {
    const registry = new Registry();
    registry.setDefaultLabels({ service: 'svc' });
    new Counter({ name: 'calls_total', help: 'h', registers: [registry] }).inc(calls);
    new Gauge({
      name: 'policy_info',
      help: 'h',
      labelNames: ['version'],
      aggregator: 'first',
      registers: [registry],
    }).set({ version: policyVersion }, 1);
    new Gauge({ name: 'redis_up', help: 'h', aggregator: 'min', registers: [registry] }).set(redisUp);
    return registry.getMetricsAsJSON();
  };

  it('sums counters and takes each gauge by its aggregator', async () => {
    const text = await aggregateWorkerMetrics([await worker(3, 'v1', 1), await worker(2, 'v1', 0)]);
    expect(text).toContain('calls_total{service="svc"} 5');
    expect(text).toContain('policy_info{version="v1",service="svc"} 1');
    expect(text).not.toContain('policy_info{version="v1",service="svc"} 2');
    expect(text).toContain('redis_up{service="svc"} 0');
  });
});
