import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStackLogsOnFailure, writeDefinitionFile } from './support';

// The whole stack with the ingress Envoy on delta xDS (api_type DELTA_GRPC): the control
// plane classifies the ingress and both policy services into their views, the ingress gets
// its listeners, routes, clusters and endpoints incrementally, and a definition change (a new
// route) reaches it as one route-configuration resource.

interface StatusBody {
  views: Record<string, Record<string, string>>;
  nodes: Array<{
    nodeId?: string;
    view?: string;
    variant: string;
    types: Record<string, { ackedVersion?: string }>;
  }>;
}

let stack: Stack;
let dir: string;
let definitionFile: string;
let definition: Record<string, unknown>;

async function buildDefinition() {
  const [gateway, customer, extAuthz, rateLimit] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  return {
    listeners: { http: { address: '127.0.0.1', port: gateway } },
    identity: {
      firebase: { projectId: 'demo-sekisho-e2e' },
      groupClaim: 'tier',
      groups: { basic_customer: ['read:own_profile'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
      rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
    },
    services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
    ],
  };
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
}

const status = async () => (await (await fetch(`${stack.controlPlaneAdminUrl}/status`)).json()) as StatusBody;
const metric = async (name: string, labels: string) => {
  const text = await (await fetch(`${stack.controlPlaneAdminUrl}/metrics`)).text();
  // Every series also carries service="control-plane".
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(' ').pop()) : 0;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-delta-e2e-'));
  definitionFile = join(dir, 'gateway.yaml');
  definition = await buildDefinition();
  await writeDefinitionFile(definitionFile, definition);
  stack = await startStack({ definitionFile, logLevel: 'info', adsApiType: 'DELTA_GRPC', envoyConcurrency: 1 });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the ingress on delta xDS', () => {
  it('classifies the ingress and both policy services into their views; the ingress speaks delta', async () => {
    showStackLogsOnFailure(() => stack);
    const nodes = await until(
      async () => {
        const s = await status();
        return s.nodes.length >= 3 ? s.nodes : undefined;
      },
      20_000,
      'three xDS clients',
    );
    const byView = Object.fromEntries(nodes.map((n) => [n.view, n.variant]));
    expect(byView).toEqual({ ingress: 'delta', 'ext-authz': 'sotw', ratelimit: 'sotw' });
    const ingress = nodes.find((n) => n.view === 'ingress');
    expect(Object.keys(ingress?.types ?? {})).not.toContain('type.googleapis.com/sekisho.policy.v1.AuthzPolicy');
    // The policies reached ext-authz: a request without a token is refused by its decision.
    const response = await fetch(`${stack.gatewayUrl}/api/v1/customer/profile`);
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('MISSING_TOKEN');
  });

  it('serves a route added to the definition, pushing one route configuration to the ingress', async () => {
    showStackLogsOnFailure(() => stack);
    const token = await stack.mintToken('delta-user', { group: 'basic_customer' });
    expect(
      (await fetch(`${stack.gatewayUrl}/api/v1/customer/me`, { headers: { authorization: `Bearer ${token}` } })).status,
    ).toBe(404);
    const routesBefore = await metric('sekisho_xds_resources_sent_total', 'type="route",variant="delta"');
    const clustersBefore = await metric('sekisho_xds_resources_sent_total', 'type="cluster",variant="delta"');
    const listenersBefore = await metric('sekisho_xds_resources_sent_total', 'type="listener",variant="delta"');

    definition = {
      ...definition,
      routes: [
        ...(definition.routes as unknown[]),
        { match: 'GET /api/v1/customer/me', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      ],
    };
    await writeDefinitionFile(definitionFile, definition);
    await until(
      async () => {
        const r = await fetch(`${stack.gatewayUrl}/api/v1/customer/me`, {
          headers: { authorization: `Bearer ${token}` },
        });
        return r.status === 200 ? r : undefined;
      },
      20_000,
      'the new route being served',
    );
    const route = (await status()).views.ingress?.['type.googleapis.com/envoy.config.route.v3.RouteConfiguration'];
    await until(
      async () => {
        const ingress = (await status()).nodes.find((n) => n.view === 'ingress');
        return ingress?.types['type.googleapis.com/envoy.config.route.v3.RouteConfiguration']?.ackedVersion === route
          ? true
          : undefined;
      },
      10_000,
      'the route configuration ACKed',
    );
    expect(await metric('sekisho_xds_resources_sent_total', 'type="route",variant="delta"')).toBe(routesBefore + 1);
    expect(await metric('sekisho_xds_resources_sent_total', 'type="cluster",variant="delta"')).toBe(clustersBefore);
    expect(await metric('sekisho_xds_resources_sent_total', 'type="listener",variant="delta"')).toBe(listenersBefore);
  });
});
