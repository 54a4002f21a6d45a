// The generated ingress, served over ADS to a real Envoy, with ext-authz and the rate-limit
// service unreachable: authentication fails closed on every route (auth: none included), and
// Envoy's own replies carry the reference design's JSON body, the correlation id header and
// nothing that names the software behind the gateway.
import { connect } from 'node:http2';
import { freePort } from '@sekisho/devstack/processes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileDefinition } from '../definition/load';
import { type AdsWithEnvoy, serveToRealEnvoy } from '../xds/test-helpers';
import { edgeLimits } from './edge';

interface ErrorJson {
  success: false;
  error: { code: string; message: string; correlation_id: string; timestamp: string };
  data: null;
}

describe('generated ingress on a real Envoy, policy services down', () => {
  let served: AdsWithEnvoy | undefined;
  let gateway: string;

  beforeAll(async () => {
    // Nothing listens on these ports: every call to ext-authz or the rate-limit service fails.
    const [port, extAuthz, rateLimit, service] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const compiled = compileDefinition({
      listeners: { http: { address: '127.0.0.1', port } },
      identity: { firebase: { projectId: 'demo-edge' }, groupClaim: 'tier', groups: { member: ['read:own_profile'] } },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${extAuthz}` },
        rateLimit: { address: `127.0.0.1:${rateLimit}` },
      },
      services: { customer: { endpoints: [`127.0.0.1:${service}`] } },
      routes: [
        { match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] },
        { match: '/api/v1/auth/*', to: 'customer', auth: 'none' },
      ],
    });
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
    gateway = `http://127.0.0.1:${port}`;

    served = await serveToRealEnvoy('envoy-edge-test', compiled.resources);
    await served.envoy.waitForListener('ingress_http', 30_000);
  }, 60_000);

  afterAll(async () => {
    await served?.close();
  });

  const get = async (path: string, headers: Record<string, string> = {}) => {
    const response = await fetch(`${gateway}${path}`, { headers });
    const text = await response.text();
    return { status: response.status, headers: response.headers, text };
  };

  it.each([
    ['a route that requires a token', '/api/v1/customer/profile'],
    ['an auth: none route', '/api/v1/auth/login'],
  ])('refuses %s with 503 SERVICE_UNAVAILABLE when ext-authz cannot answer', async (_case, path) => {
    const response = await get(path);
    expect(response.status).toBe(503);
    const body = JSON.parse(response.text) as ErrorJson;
    expect(body).toMatchObject({ success: false, error: { code: 'SERVICE_UNAVAILABLE' }, data: null });
    // The correlation id reaches the client as a header too, and names the same request.
    expect(response.headers.get('x-request-id')).toBe(body.error.correlation_id);
    expect(response.headers.get('server')).toBeNull();
  });

  it('answers a path no route matches with 404 NOT_FOUND, in English when asked', async () => {
    const response = await get('/api/v1/../../admin', { 'accept-language': 'en-GB,ja;q=0.5' });
    expect(response.status).toBe(404);
    const body = JSON.parse(response.text) as ErrorJson;
    expect(body.error).toMatchObject({ code: 'NOT_FOUND', message: 'The requested resource was not found.' });
    expect(response.headers.get('x-request-id')).toBe(body.error.correlation_id);
  });

  it('rejects a header with an underscore (a service could read it as the dashed name)', async () => {
    expect((await get('/api/v1/auth/login', { x_sekisho_user_id: 'admin' })).status).toBe(400);
  });

  it('limits concurrent streams of an HTTP/2 (h2c) client', async () => {
    const session = connect(gateway);
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxConcurrentStreams).toBe(edgeLimits.http2.maxConcurrentStreams);
    } finally {
      session.close();
    }
  });
});
