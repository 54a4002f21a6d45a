import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import {
  RateLimitResponse_Code as Code,
  type RateLimitResponse,
  RateLimitResponse_RateLimit_Unit as Unit,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { rateLimitDomain } from '@sekisho/service-kit/contract';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  authenticated,
  descriptor,
  eventually,
  headersOf,
  startTestService,
  type TestService,
  testPolicy,
} from './test-helpers';

// Domains from envoyproxy/ratelimit files (RATELIMIT_CONFIG_DIR), through the service's real
// gRPC server over a socket and a real Redis, counted by the same limiter as the control
// plane's rules. The compatibility cases are written from that project's documented
// semantics: request descriptors in, the per-descriptor codes it answers out.

let redisServer: RedisHandle;
let redis: Redis;
let dir: string;
let service: TestService;
const started: TestService[] = [];
// 10 s into a whole hour (a Thursday, the first day of the epoch's weeks is one too).
const start = Date.UTC(2026, 0, 1) + 10_000;
let now = start;

const ok = Code.OK;
const over = Code.OVER_LIMIT;
const codes = (r: RateLimitResponse) => r.statuses.map((s) => s.code);

async function startWith(files: Record<string, string>, env: Record<string, string> = {}): Promise<TestService> {
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const s = await startTestService({
    redisUrl: redisServer.url,
    clock: () => now,
    env: { RATELIMIT_CONFIG_DIR: dir, RATELIMIT_CONFIG_POLL_INTERVAL: '100ms', ...env },
  });
  started.push(s);
  // A call before Redis is connected would be answered by the failure mode, uncounted.
  await eventually(() => s.app.status().redis === 'ready');
  return s;
}

beforeAll(async () => {
  redisServer = await startRedis();
  redis = new Redis(redisServer.url);
});
afterAll(async () => {
  redis?.disconnect();
  await redisServer?.stop();
});
beforeEach(async () => {
  await redis.flushall();
  now = start;
  dir = await mkdtemp(join(tmpdir(), 'ratelimit-config-'));
});
afterEach(async () => {
  for (const s of started.splice(0)) await s.close();
  await rm(dir, { recursive: true, force: true });
});

interface CompatCase {
  name: string;
  config: string;
  /** Requests in order: descriptors, optional hits_addend, the codes expected per descriptor and overall. */
  requests: Array<{
    descriptors: Array<Array<[string, string]>>;
    hitsAddend?: number;
    expect: Code[];
    overall?: Code;
  }>;
}

const twoPerMinuteByIp = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 2 }
  - key: remote_address
    value: 10.0.0.1
    rate_limit: { unlimited: true }
`;

const compatibility: CompatCase[] = [
  {
    name: 'a key-only entry counts each value separately',
    config: twoPerMinuteByIp,
    requests: [
      { descriptors: [[['remote_address', '1.1.1.1']]], expect: [ok] },
      { descriptors: [[['remote_address', '1.1.1.1']]], expect: [ok] },
      { descriptors: [[['remote_address', '1.1.1.1']]], expect: [over], overall: over },
      { descriptors: [[['remote_address', '2.2.2.2']]], expect: [ok] },
    ],
  },
  {
    name: 'an exact unlimited value is never limited',
    config: twoPerMinuteByIp,
    requests: [1, 2, 3, 4].map(() => ({ descriptors: [[['remote_address', '10.0.0.1']]], expect: [ok] })),
  },
  {
    name: 'hits_addend counts that many hits',
    config: twoPerMinuteByIp,
    requests: [
      { descriptors: [[['remote_address', '3.3.3.3']]], hitsAddend: 2, expect: [ok] },
      { descriptors: [[['remote_address', '3.3.3.3']]], expect: [over] },
    ],
  },
  {
    name: 'a limit applies only at its exact depth',
    config: `
domain: nest
descriptors:
  - key: tenant
    rate_limit: { unit: minute, requests_per_unit: 1 }
    descriptors:
      - key: user
        rate_limit: { unit: minute, requests_per_unit: 2 }
`,
    requests: [
      {
        descriptors: [
          [['tenant', 't']],
          [
            ['tenant', 't'],
            ['user', 'u'],
          ],
        ],
        expect: [ok, ok],
      },
      {
        descriptors: [
          [
            ['tenant', 't'],
            ['user', 'u'],
          ],
        ],
        expect: [ok],
      },
      {
        descriptors: [
          [
            ['tenant', 't'],
            ['user', 'u'],
          ],
        ],
        expect: [over],
      },
      { descriptors: [[['tenant', 't']]], expect: [over] },
      // Deeper than any rule, or in another order: no limit.
      {
        descriptors: [
          [
            ['tenant', 't'],
            ['user', 'u'],
            ['x', 'y'],
          ],
          [
            ['user', 'u'],
            ['tenant', 't'],
          ],
        ],
        expect: [ok, ok],
      },
    ],
  },
  {
    name: 'exact beats wildcard beats key-only, each with its own counter',
    config: `
domain: paths
descriptors:
  - key: path
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 1 }
  - key: path
    value: /api/*
    rate_limit: { unit: minute, requests_per_unit: 2 }
  - key: path
    rate_limit: { unit: minute, requests_per_unit: 3 }
`,
    requests: [
      { descriptors: [[['path', '/login']]], expect: [ok] },
      { descriptors: [[['path', '/login']]], expect: [over] },
      { descriptors: [[['path', '/api/a']], [['path', '/api/a']]], expect: [ok, ok] },
      { descriptors: [[['path', '/api/a']]], expect: [over] },
      // Without share_threshold every value matching the wildcard has its own counter.
      { descriptors: [[['path', '/api/b']]], expect: [ok] },
      { descriptors: [[['path', '/other']], [['path', '/other']], [['path', '/other']]], expect: [ok, ok, ok] },
      { descriptors: [[['path', '/other']]], expect: [over] },
    ],
  },
  {
    name: 'share_threshold: all values matching a wildcard share one counter',
    config: `
domain: shared
descriptors:
  - key: path
    value: /api/*
    share_threshold: true
    rate_limit: { unit: minute, requests_per_unit: 2 }
`,
    requests: [
      { descriptors: [[['path', '/api/a']]], expect: [ok] },
      { descriptors: [[['path', '/api/b']]], expect: [ok] },
      { descriptors: [[['path', '/api/c']]], expect: [over] },
    ],
  },
  {
    name: 'a replaced limit is not applied when its replacement matches the same request',
    config: `
domain: replace
descriptors:
  - key: user
    rate_limit: { unit: minute, requests_per_unit: 1, name: per_user }
  - key: premium
    rate_limit:
      unit: minute
      requests_per_unit: 3
      replaces: [{ name: per_user }]
`,
    requests: [
      { descriptors: [[['user', 'u']], [['premium', 'u']]], expect: [ok, ok] },
      { descriptors: [[['user', 'u']], [['premium', 'u']]], expect: [ok, ok] },
      { descriptors: [[['user', 'u']], [['premium', 'u']]], expect: [ok, ok] },
      { descriptors: [[['user', 'u']], [['premium', 'u']]], expect: [ok, over] },
      // Alone, per_user applies (and was never counted above).
      { descriptors: [[['user', 'u']]], expect: [ok] },
      { descriptors: [[['user', 'u']]], expect: [over] },
    ],
  },
  {
    name: 'shadow_mode counts and reports but always answers OK',
    config: `
domain: shadow
descriptors:
  - key: user
    shadow_mode: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: ip
    rate_limit: { unit: second, requests_per_unit: 1 }
`,
    requests: [
      { descriptors: [[['user', 'u']]], expect: [ok] },
      { descriptors: [[['user', 'u']]], expect: [ok], overall: ok },
      { descriptors: [[['user', 'u']], [['ip', 'i']]], expect: [ok, ok] },
      { descriptors: [[['user', 'u']], [['ip', 'i']]], expect: [ok, over], overall: over },
    ],
  },
  {
    name: 'quota_mode refuses only when every quota descriptor is over',
    config: `
domain: quota
descriptors:
  - key: a
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: b
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 2 }
`,
    requests: [
      { descriptors: [[['a', 'x']], [['b', 'x']]], expect: [ok, ok], overall: ok },
      { descriptors: [[['a', 'x']], [['b', 'x']]], expect: [over, ok], overall: ok },
      { descriptors: [[['a', 'x']], [['b', 'x']]], expect: [over, over], overall: over },
    ],
  },
  {
    name: 'descriptors no rule matches, and other domains, are OK',
    config: twoPerMinuteByIp,
    requests: [
      {
        descriptors: [
          [['header', 'x']],
          [
            ['remote_address', '4.4.4.4'],
            ['extra', 'y'],
          ],
        ],
        expect: [ok, ok],
      },
    ],
  },
];

describe('envoyproxy/ratelimit compatibility cases', () => {
  it.each(compatibility)('$name', async ({ config, requests }) => {
    service = await startWith({ 'case.yaml': config });
    const domain = /domain: (\S+)/.exec(config)?.[1] ?? '';
    for (const [i, request] of requests.entries()) {
      const response = await service.call({
        domain,
        hitsAddend: request.hitsAddend ?? 0,
        descriptors: request.descriptors.map((entries) => descriptor(...entries)),
      });
      expect(codes(response), `request #${i}`).toEqual(request.expect);
      const overall = request.overall ?? (request.expect.includes(over) ? over : ok);
      expect(response.overallCode, `request #${i} overall`).toBe(overall);
    }
  });
});

describe('responses for file domains', () => {
  it('answers current_limit, limit_remaining and duration_until_reset per descriptor', async () => {
    service = await startWith({
      'edge.yaml': `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 2, name: per_ip }
  - key: remote_address
    value: 10.0.0.1
    rate_limit: { unlimited: true }
  - key: month
    rate_limit: { unit: month, requests_per_unit: 9 }
`,
    });
    const response = await service.call({
      domain: 'edge',
      descriptors: [
        descriptor(['remote_address', '1.1.1.1']),
        descriptor(['remote_address', '10.0.0.1']),
        descriptor(['month', 'm']),
        descriptor(['nothing', 'n']),
      ],
    });
    expect(response.statuses).toEqual([
      {
        code: ok,
        currentLimit: { name: 'per_ip', requestsPerUnit: 2, unit: Unit.MINUTE },
        limitRemaining: 1,
        durationUntilReset: { seconds: 50, nanos: 0 },
      },
      { code: ok, limitRemaining: 4_294_967_295 },
      {
        code: ok,
        currentLimit: { name: '', requestsPerUnit: 9, unit: Unit.MONTH },
        limitRemaining: 8,
        durationUntilReset: expect.objectContaining({ seconds: expect.any(Number) }),
      },
      { code: ok, limitRemaining: 0 },
    ]);
    expect(headersOf(response)).toMatchObject({ ratelimit: '"per_ip";r=1;t=50' });
    // The unlimited and unmatched descriptors never reached Redis.
    expect((await redis.keys('*')).length).toBe(2);
  });

  it('sends the draft-10 fields by default, named by the rate_limit name or stats key, and draft-06 when asked', async () => {
    service = await startWith({
      'edge.yaml': `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 2, name: per_ip }
  - key: user
    rate_limit: { unit: hour, requests_per_unit: 5 }
`,
    });
    const response = await service.call({
      domain: 'edge',
      descriptors: [descriptor(['remote_address', '1.1.1.1']), descriptor(['user', 'u'])],
    });
    expect(headersOf(response)).toEqual({
      'ratelimit-policy': '"per_ip";q=2;w=60, "edge.user";q=5;w=3600',
      ratelimit: '"per_ip";r=1;t=50',
    });
    await service.close();
    service = await startWith(
      {
        'edge.yaml': `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 2, name: per_ip }
`,
      },
      { RATELIMIT_HEADERS: 'draft-06' },
    );
    const legacy = await service.call({ domain: 'edge', descriptors: [descriptor(['remote_address', '1.1.1.2'])] });
    expect(headersOf(legacy)).toEqual({
      'ratelimit-limit': '2',
      'ratelimit-remaining': '1',
      'ratelimit-reset': '50',
      'ratelimit-policy': '2;w=60',
    });
  });

  it("applies a descriptor's limit override instead of the file's limit, as the reference does", async () => {
    service = await startWith({ 'edge.yaml': twoPerMinuteByIp });
    const withOverride = (ip: string, requestsPerUnit: number, unit: number) => ({
      entries: [{ key: 'remote_address', value: ip }],
      limit: { requestsPerUnit, unit },
    });
    // 1 per hour (unit 3 = HOUR) instead of 2 per minute; even the unlimited IP is limited.
    const first = await service.call({ domain: 'edge', descriptors: [withOverride('10.0.0.1', 1, 3)] });
    expect(first.statuses[0]).toMatchObject({ code: ok, currentLimit: { requestsPerUnit: 1, unit: Unit.HOUR } });
    expect(codes(await service.call({ domain: 'edge', descriptors: [withOverride('10.0.0.1', 1, 3)] }))).toEqual([
      over,
    ]);
    // A descriptor it names matches no rule: the override still applies.
    const unknown = { entries: [{ key: 'other', value: 'x' }], limit: { requestsPerUnit: 0, unit: 1 } };
    expect(codes(await service.call({ domain: 'edge', descriptors: [unknown] }))).toEqual([over]);
    // An UNKNOWN unit is no override: the file's limit applies.
    const response = await service.call({ domain: 'edge', descriptors: [withOverride('7.7.7.7', 1, 0)] });
    expect(response.statuses[0]).toMatchObject({ code: ok, currentLimit: { requestsPerUnit: 2, unit: Unit.MINUTE } });
  });

  it('counts results per rule in /metrics, shadow-mode excesses apart', async () => {
    service = await startWith({
      'm.yaml': `
domain: m
descriptors:
  - key: user
    shadow_mode: true
    rate_limit: { unit: second, requests_per_unit: 0 }
  - key: ip
    detailed_metric: true
    rate_limit: { unit: second, requests_per_unit: 5 }
`,
    });
    await service.call({ domain: 'm', descriptors: [descriptor(['user', 'u']), descriptor(['ip', '5.6.7.8'])] });
    const metrics = (await service.admin('/metrics')).text;
    expect(metrics).toMatch(/sekisho_ratelimit_decisions_total\{rule="m\.user",result="shadow_mode"[^}]*\} 1/);
    expect(metrics).toMatch(/sekisho_ratelimit_decisions_total\{rule="m\.ip_5\.6\.7\.8",result="ok"[^}]*\} 1/);
    expect(metrics).toMatch(/sekisho_ratelimit_config_domain_info\{domain="m",file="m\.yaml",version="[0-9a-f]{12}"/);
    const exceeded = service.logs.find((r) => r.event_type === 'rate_limit_exceeded');
    expect(exceeded).toMatchObject({ domain: 'm', rule_id: 'm.user', shadow_mode: true });
    expect(JSON.stringify(exceeded)).not.toContain('"u"');
  });
});

describe('the configuration directory', () => {
  it('serves file domains with no control plane, ready without a policy', async () => {
    service = await startWith({ 'edge.yaml': twoPerMinuteByIp });
    await eventually(() => service.app.isReady());
    const status = JSON.parse((await service.admin('/status')).text);
    expect(status).toMatchObject({
      control_plane: null,
      config_dir: { path: dir, readable: true, domains: [{ domain: 'edge', file: 'edge.yaml', rules: 2 }], errors: [] },
    });
    // The control plane's domain is not limited when there is no control plane.
    const other = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('u')] });
    expect(other.overallCode).toBe(ok);
  });

  it("refuses a file naming the control plane's domain, or a domain another file has", async () => {
    service = await startWith({
      'a.yaml': twoPerMinuteByIp,
      'b.yaml': twoPerMinuteByIp,
      'c.yaml': `domain: ${rateLimitDomain}\n`,
      'ignored.txt': 'not: yaml',
    });
    const { config_dir } = JSON.parse((await service.admin('/status')).text);
    expect(config_dir.domains).toEqual([expect.objectContaining({ domain: 'edge', file: 'a.yaml' })]);
    expect(config_dir.errors).toEqual([
      expect.objectContaining({ file: 'b.yaml', path: 'domain', reason: 'domain "edge" is already in a.yaml' }),
      expect.objectContaining({ file: 'c.yaml', path: 'domain', reason: expect.stringContaining('control plane') }),
    ]);
    // Once a.yaml is gone, b.yaml gets the domain.
    await rm(join(dir, 'a.yaml'));
    await service.app.configDirectory?.rescan();
    expect(service.app.status()).toMatchObject({
      config_dir: { domains: [expect.objectContaining({ domain: 'edge', file: 'b.yaml' })] },
    });
  });

  it('applies an edited file while running, and keeps the last good one when an edit is broken', async () => {
    const file = join(dir, 'edge.yaml');
    const limitOf = (n: number) =>
      `domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: ${n} }\n`;
    service = await startWith({ 'edge.yaml': limitOf(1) });
    const hit = () => service.call({ domain: 'edge', descriptors: [descriptor(['remote_address', '1.1.1.1'])] });
    expect(codes(await hit())).toEqual([ok]);
    expect(codes(await hit())).toEqual([over]);

    // A new limit counts on a counter of its own (the Redis key names the limit's definition),
    // never on what was counted under the old one.
    await writeFile(file, limitOf(3));
    await eventually(() => service.app.configDirectory?.domains().get('edge')?.limits[0]?.requestsPerWindow === 3);
    for (let i = 0; i < 3; i++) expect(codes(await hit())).toEqual([ok]);
    expect(codes(await hit())).toEqual([over]);

    // A broken edit: refused with file, path and reason; limit 3 stays in force.
    await writeFile(file, limitOf(3).replace('rate_limit: {', 'rate_limit: { burst: 2,'));
    // (writeFile is not atomic: a scan may catch the file empty, a refusal of its own.)
    const isBurst = (r: Record<string, unknown>) =>
      r.event_type === 'config_file_rejected' && r.path === 'descriptors[0].rate_limit.burst';
    await eventually(() => service.logs.some(isBurst));
    const rejected = service.logs.find(isBurst);
    expect(rejected).toMatchObject({
      file: 'edge.yaml',
      path: 'descriptors[0].rate_limit.burst',
      reason: 'unknown key "burst"',
      domain_in_force: 'edge',
    });
    const { config_dir } = JSON.parse((await service.admin('/status')).text);
    expect(config_dir.domains).toEqual([expect.objectContaining({ domain: 'edge', rules: 1 })]);
    expect(config_dir.errors).toEqual([
      expect.objectContaining({
        file: 'edge.yaml',
        path: 'descriptors[0].rate_limit.burst',
        in_force: expect.any(String),
      }),
    ]);
    expect((await service.admin('/metrics')).text).toMatch(
      /sekisho_ratelimit_config_file_error\{file="edge\.yaml"[^}]*\} 1/,
    );
    expect(service.app.configDirectory?.domains().get('edge')?.limits[0]?.requestsPerWindow).toBe(3);
    now += 60_000;
    expect(codes(await hit())).toEqual([ok]);

    // Fixed: the error clears.
    await writeFile(file, limitOf(5));
    await eventually(() => service.app.configDirectory?.domains().get('edge')?.limits[0]?.requestsPerWindow === 5);
    expect((await service.admin('/metrics')).text).toMatch(
      /sekisho_ratelimit_config_file_error\{file="edge\.yaml"[^}]*\} 0/,
    );
    expect(service.app.status()).toMatchObject({ config_dir: { errors: [] } });
  });

  it('follows a Kubernetes ConfigMap update (the ..data symlink swapped to a new directory)', async () => {
    const limitOf = (n: number) =>
      `domain: cm\ndescriptors:\n  - key: k\n    rate_limit: { unit: minute, requests_per_unit: ${n} }\n`;
    // The layout the kubelet writes: name.yaml → ..data/name.yaml, ..data → ..<timestamp>.
    await mkdir(join(dir, '..2026_01_01_00_00_00.1'));
    await writeFile(join(dir, '..2026_01_01_00_00_00.1', 'cm.yaml'), limitOf(1));
    await symlink('..2026_01_01_00_00_00.1', join(dir, '..data'));
    await symlink('..data/cm.yaml', join(dir, 'cm.yaml'));
    service = await startWith({});
    expect(service.app.configDirectory?.domains().get('cm')?.limits[0]?.requestsPerWindow).toBe(1);

    await mkdir(join(dir, '..2026_01_01_00_01_00.2'));
    await writeFile(join(dir, '..2026_01_01_00_01_00.2', 'cm.yaml'), limitOf(7));
    await symlink('..2026_01_01_00_01_00.2', join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await rm(join(dir, '..2026_01_01_00_00_00.1'), { recursive: true });
    await eventually(() => service.app.configDirectory?.domains().get('cm')?.limits[0]?.requestsPerWindow === 7);
    expect(service.app.status()).toMatchObject({ config_dir: { domains: [{ domain: 'cm', file: 'cm.yaml' }] } });
  });

  it('serves file domains and the control plane side by side', async () => {
    service = await startWith({ 'edge.yaml': twoPerMinuteByIp }, { RATELIMIT_XDS_ADDRESS: '127.0.0.1:1' });
    // A control plane is configured: not ready until its policy arrives.
    expect(service.app.isReady()).toBe(false);
    service.app.applyPolicy(testPolicy, 'v1');
    await eventually(() => service.app.isReady());
    for (let i = 0; i < 3; i++) await service.call({ domain: rateLimitDomain, descriptors: [authenticated('u')] });
    const cp = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('u')] });
    expect(cp.overallCode).toBe(over);
    const file = await service.call({ domain: 'edge', descriptors: [descriptor(['remote_address', '1.1.1.1'])] });
    expect(file.statuses[0]).toMatchObject({ code: ok, limitRemaining: 1 });
  });

  it('refuses to start when RATELIMIT_CONFIG_DIR is not a directory, naming the variable', async () => {
    await expect(startWith({}, { RATELIMIT_CONFIG_DIR: join(dir, 'missing') })).rejects.toThrow('RATELIMIT_CONFIG_DIR');
  });
});
