// The admin API of a real control plane (startControlPlane in-process, its real fastify admin
// server and gRPC xDS server) with raw grpc-js ADS clients connected, state of the world and
// delta: authentication refusals, the proxies with their ACKs and NACKs, the IR, each view's
// resources, and the convergence histogram after a definition change.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@sekisho/service-kit/config';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, configSchema, loadControlPlaneConfig, startControlPlane } from './main';
import { redactSecrets } from './redact';
import {
  AdsTestStream,
  adsClient,
  captureLogger,
  DeltaTestStream,
  deltaVersions,
  eventually,
  type LogRecord,
  testDefinitionYaml,
} from './xds/test-helpers';
import { typeUrls } from './xds/type-urls';

const token = 'admin-test-token-0123456789abcdef';

interface ProxyBody {
  nodeId: string;
  view: string;
  variant: string;
  types: Record<
    string,
    { ackedVersion: string | null; lastNack: { version: string; message: string; at: string } | null }
  >;
}

describe('admin API', () => {
  let dir: string;
  let cp: ControlPlane;
  let client: ReturnType<typeof adsClient>;
  let records: LogRecord[];
  let admin: string;
  /** `auth` null: no Authorization header. */
  const get = (path: string, auth: string | null = `Bearer ${token}`) =>
    fetch(`${admin}${path}`, { headers: auth === null ? {} : { authorization: auth } });
  const proxies = async () => ((await (await get('/api/v1/proxies')).json()) as { proxies: ProxyBody[] }).proxies;
  const convergenceCount = async () => {
    const metrics = await (await get('/metrics', null)).text();
    return Number(/sekisho_xds_convergence_seconds_count\{view="ingress"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-admin-'));
    await writeFile(join(dir, 'gateway.yaml'), testDefinitionYaml());
    await writeFile(join(dir, 'admin-token'), `${token}\n`);
    const captured = captureLogger('info');
    records = captured.records;
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: 'gateway.yaml',
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
      CONTROL_PLANE_ADMIN_TOKEN_FILE: 'admin-token',
    });
    cp = await startControlPlane(config, {
      logger: captured.logger,
      registry: new Registry(),
      cwd: dir,
      watcher: { debounceMs: 10, pollIntervalMs: 50 },
    });
    admin = `http://127.0.0.1:${cp.adminPort}`;
    client = adsClient(cp.xdsPort);
  });
  afterAll(async () => {
    client?.close();
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps /healthz, /readyz and /metrics open for probes and Prometheus', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) expect((await get(path, null)).status, path).toBe(200);
  });

  it('refuses everything else without the right bearer token (401, nothing of the state), never logging the token', async () => {
    const paths = [
      '/status',
      '/api/v1/proxies',
      '/api/v1/ir',
      '/api/v1/views',
      '/api/v1/views/ingress/resources',
      '/api/v1/views/egress/resources',
      '/%73tatus',
      '/api/v1/nothing-here',
    ];
    const wrong = [null, 'Bearer wrong-token', `Basic ${Buffer.from(`admin:${token}`).toString('base64')}`, token];
    for (const path of paths) {
      for (const auth of wrong) {
        const response = await get(path, auth);
        expect(response.status, `${path} ${auth}`).toBe(401);
        expect(response.headers.get('www-authenticate')).toBe('Bearer');
        expect(await response.json()).toEqual({ error: 'unauthorized' });
      }
    }
    expect((await get('/status')).status).toBe(200);
    expect(records).toContainEqual(
      expect.objectContaining({ event_type: 'admin_unauthorized', path: '/api/v1/ir', reason: 'wrong token' }),
    );
    expect(records).toContainEqual(expect.objectContaining({ event_type: 'admin_unauthorized', reason: 'no token' }));
    expect(JSON.stringify(records)).not.toContain(token);
  });

  it('serves the IR and the rendered resources of a view, by type', async () => {
    const ir = (await (await get('/api/v1/ir')).json()) as { routes: Array<{ id: string }> };
    expect(ir.routes.map((route) => route.id)).toEqual(['get-api-v1-customer-profile', 'get-api-v1-customer-bookings']);

    const routes = (await (await get('/api/v1/views/ingress/resources?type=route')).json()) as {
      view: string;
      versions: Record<string, string>;
      resources: Array<{ type: string; name: string; resource: Record<string, unknown> }>;
    };
    expect(routes.view).toBe('ingress');
    expect(Object.keys(routes.versions)).toEqual(['route']);
    expect(routes.resources.length).toBeGreaterThan(0);
    for (const r of routes.resources) {
      expect(r.type).toBe('route');
      expect(r.resource['@type']).toBe(typeUrls.route);
    }
    const all = (await (await get('/api/v1/views/ext-authz/resources')).json()) as {
      resources: Array<{ type: string }>;
    };
    expect(all.resources.map((r) => r.type)).toEqual(['authzPolicy']);

    const badType = await get('/api/v1/views/ingress/resources?type=routes');
    expect(badType.status).toBe(400);
    expect(((await badType.json()) as { error: string }).error).toMatch(/unknown type "routes"/);
    const badView = await get('/api/v1/views/egress/resources');
    expect(badView.status).toBe(404);
    expect(((await badView.json()) as { error: string }).error).toMatch(/unknown view "egress" \(views: ingress/);
  });

  it('lists the connected proxies with their ACKs and NACKs, and times convergence after a definition change', async () => {
    const sotw = new AdsTestStream(client);
    const delta = new DeltaTestStream(client);
    try {
      sotw.send({ typeUrl: typeUrls.cluster }, 'ingress-sotw', 'sekisho-ingress');
      sotw.ack(await sotw.next());
      sotw.send({ typeUrl: typeUrls.endpoint, resourceNames: ['svc_customer'] });
      const endpoints = await sotw.next();
      sotw.ack(endpoints, ['svc_customer']);

      delta.send({ typeUrl: typeUrls.cluster }, { id: 'ingress-delta', cluster: 'sekisho-ingress' });
      delta.ack(await delta.next());
      delta.send({ typeUrl: typeUrls.endpoint, resourceNamesSubscribe: ['svc_customer'] });
      const deltaEndpoints = await delta.next();
      expect(Object.keys(deltaVersions(deltaEndpoints))).toEqual(['svc_customer']);
      delta.ack(deltaEndpoints);

      const connected = await eventually(async () => {
        const list = await proxies();
        const done = list.length === 2 && list.every((p) => p.types.endpoint?.ackedVersion === endpoints.versionInfo);
        return done && list;
      });
      expect(connected.map((p) => [p.nodeId, p.view, p.variant]).sort()).toEqual([
        ['ingress-delta', 'ingress', 'delta'],
        ['ingress-sotw', 'ingress', 'sotw'],
      ]);
      expect(Object.keys(connected[0]?.types ?? {})).toEqual(['cluster', 'endpoint']);
      const before = await convergenceCount();

      // A definition change that moves the endpoint: both proxies are pushed the new EDS version.
      await writeFile(join(dir, 'gateway.yaml'), testDefinitionYaml({ port: 3002 }));
      const moved = await sotw.next(10_000);
      expect(moved.typeUrl).toBe(typeUrls.endpoint);
      const movedDelta = await delta.next(10_000);
      expect(movedDelta.typeUrl).toBe(typeUrls.endpoint);
      sotw.ack(moved, ['svc_customer']);
      await eventually(async () => (await proxies()).some((p) => p.types.endpoint?.ackedVersion === moved.versionInfo));
      // One of two ACKed: not converged yet.
      expect(await convergenceCount()).toBe(before);
      const views = (await (await get('/api/v1/views')).json()) as {
        views: Array<{ view: string; converged: boolean }>;
      };
      expect(views.views.find((v) => v.view === 'ingress')?.converged).toBe(false);
      delta.ack(movedDelta);
      await eventually(async () => (await convergenceCount()) === before + 1, 5_000, 'convergence observed');

      // The next change is refused by the state-of-the-world proxy: its NACK shows, with the version it refused.
      await writeFile(join(dir, 'gateway.yaml'), testDefinitionYaml({ port: 3003 }));
      const refused = await sotw.next(10_000);
      sotw.send({
        typeUrl: typeUrls.endpoint,
        versionInfo: moved.versionInfo,
        responseNonce: refused.nonce,
        resourceNames: ['svc_customer'],
        errorDetail: { code: 3, message: 'endpoint port 3003 refused by test', details: [] },
      });
      delta.ack(await delta.next(10_000));
      const nacked = await eventually(async () => {
        const p = (await proxies()).find((x) => x.nodeId === 'ingress-sotw');
        return p?.types.endpoint?.lastNack ? p : undefined;
      });
      expect(nacked.types.endpoint).toMatchObject({
        ackedVersion: moved.versionInfo,
        lastNack: { version: refused.versionInfo, message: 'endpoint port 3003 refused by test' },
      });
      expect(await convergenceCount()).toBe(before + 1);

      const metrics = await (await get('/metrics', null)).text();
      expect(metrics).toMatch(/sekisho_xds_nacks_total\{type="endpoint"\} 1/);
      expect(metrics).toMatch(/sekisho_xds_bytes_sent_total\{type="endpoint",variant="sotw"\} [1-9]\d*/);
      expect(metrics).toMatch(/sekisho_xds_bytes_sent_total\{type="endpoint",variant="delta"\} [1-9]\d*/);
      expect(metrics).toMatch(/sekisho_definition_compile_seconds_count\{result="ok"\} [3-9]/);
    } finally {
      sotw.cancel();
      delta.cancel();
    }
  }, 60_000);
});

describe('admin API configuration', () => {
  const base = { CONTROL_PLANE_DEFINITION: 'gateway.yaml', CONTROL_PLANE_ALLOW_INSECURE: 'true' };
  const problems = (env: Record<string, string>) => {
    try {
      loadControlPlaneConfig(env);
      return [];
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return error.problems;
    }
  };
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-admin-config-'));
    await writeFile(join(dir, 'empty'), '\n');
    await writeFile(join(dir, 'short'), 'abc\n');
    await writeFile(join(dir, 'good'), `${token}\n`);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a non-loopback admin host without a token file, naming the variables', () => {
    expect(problems({ ...base, CONTROL_PLANE_HOST: '0.0.0.0' })).toEqual([
      expect.objectContaining({
        variable: 'CONTROL_PLANE_HOST',
        message: expect.stringMatching(/admin server would listen on 0\.0\.0\.0.*CONTROL_PLANE_ADMIN_TOKEN_FILE/),
      }),
    ]);
    expect(problems({ ...base, CONTROL_PLANE_ADMIN_HOST: '10.0.0.5' })).toEqual([
      expect.objectContaining({ variable: 'CONTROL_PLANE_ADMIN_HOST' }),
    ]);
    expect(problems({ ...base, CONTROL_PLANE_HOST: '0.0.0.0', CONTROL_PLANE_ADMIN_HOST: '127.0.0.1' })).toEqual([]);
    expect(
      problems({ ...base, CONTROL_PLANE_HOST: '0.0.0.0', CONTROL_PLANE_ADMIN_TOKEN_FILE: join(dir, 'good') }),
    ).toEqual([]);
  });

  it('names CONTROL_PLANE_ADMIN_TOKEN_FILE when the file is missing, empty or too short', () => {
    for (const [file, message] of [
      [join(dir, 'missing'), /cannot read .*ENOENT/],
      [join(dir, 'empty'), /is empty/],
      [join(dir, 'short'), /shorter than 16 characters/],
    ] as const) {
      expect(problems({ ...base, CONTROL_PLANE_ADMIN_TOKEN_FILE: file })).toEqual([
        { variable: 'CONTROL_PLANE_ADMIN_TOKEN_FILE', message: expect.stringMatching(message) },
      ]);
    }
  });
});

describe('redactSecrets', () => {
  it('replaces every private key (IR PEM, Envoy Secret) and keeps the rest', () => {
    expect(
      redactSecrets({
        listeners: { https: { certificates: [{ certFile: 'a.crt', certificatePem: 'CERT', privateKeyPem: 'KEY' }] } },
        resources: [
          { tlsCertificate: { certificateChain: { inlineBytes: 'Q0VSVA==' }, privateKey: { inlineBytes: 'S0VZ' } } },
        ],
      }),
    ).toEqual({
      listeners: {
        https: { certificates: [{ certFile: 'a.crt', certificatePem: 'CERT', privateKeyPem: '[redacted]' }] },
      },
      resources: [{ tlsCertificate: { certificateChain: { inlineBytes: 'Q0VSVA==' }, privateKey: '[redacted]' } }],
    });
  });
});
