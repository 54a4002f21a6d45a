import { afterEach, describe, expect, it } from 'vitest';
import { type AdminServer, startAdminServer } from './admin-server';
import { createLogger } from './logger';
import { createMetricsRegistry } from './metrics';

describe('admin server', () => {
  let server: AdminServer | undefined;
  afterEach(async () => server?.close());

  it('serves liveness, readiness that follows isReady, Prometheus metrics and status', async () => {
    let ready = false;
    const registry = createMetricsRegistry('admin-test');
    server = await startAdminServer({
      port: 0,
      registry,
      logger: createLogger('admin-test', { level: 'silent' }),
      isReady: () => ready,
      status: () => ({ policyVersion: 'v1' }),
    });
    const base = `http://127.0.0.1:${server.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    ready = true;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('process_cpu_user_seconds_total{service="admin-test"}');
    expect(await (await fetch(`${base}/status`)).json()).toEqual({ policyVersion: 'v1' });
  });

  it("adds readyDetails to /readyz's body, ready or not", async () => {
    let ready = true;
    server = await startAdminServer({
      port: 0,
      registry: createMetricsRegistry('admin-test'),
      logger: createLogger('admin-test', { level: 'silent' }),
      isReady: () => ready,
      readyDetails: () => ({ accounts: { subscribed: false } }),
      status: () => ({}),
    });
    const readyz = async () => {
      const response = await fetch(`http://127.0.0.1:${server?.port}/readyz`);
      return { code: response.status, body: await response.json() };
    };
    expect(await readyz()).toEqual({
      code: 200,
      body: { status: 'ready', details: { accounts: { subscribed: false } } },
    });
    ready = false;
    expect(await readyz()).toEqual({
      code: 503,
      body: { status: 'not ready', details: { accounts: { subscribed: false } } },
    });
  });

  it('with authenticate: /healthz, /readyz and /metrics stay open, /status and added routes answer 401 unless it agrees', async () => {
    server = await startAdminServer({
      port: 0,
      registry: createMetricsRegistry('admin-test'),
      logger: createLogger('admin-test', { level: 'silent' }),
      isReady: () => true,
      status: () => ({ secret: 'state' }),
      authenticate: (request) => request.headers.authorization === 'Bearer good',
      routes: (app) => app.get('/api/extra', async () => ({ extra: true })),
    });
    const base = `http://127.0.0.1:${server.port}`;
    for (const path of ['/healthz', '/readyz', '/metrics', '/metrics?name=x']) {
      expect((await fetch(`${base}${path}`)).status, path).toBe(200);
    }
    for (const path of ['/status', '/api/extra', '/nothing', '/healthz/../status']) {
      const response = await fetch(`${base}${path}`, { headers: { authorization: 'Bearer bad' } });
      expect(response.status, path).toBe(401);
      expect(await response.text()).toBe('{"error":"unauthorized"}');
    }
    const good = { headers: { authorization: 'Bearer good' } };
    expect(await (await fetch(`${base}/status`, good)).json()).toEqual({ secret: 'state' });
    expect(await (await fetch(`${base}/api/extra`, good)).json()).toEqual({ extra: true });
  });
});
