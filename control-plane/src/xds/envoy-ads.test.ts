// The ADS server against a real Envoy 1.40: Envoy bootstraps with nothing but the
// address of the control plane, gets a cluster (via EDS), a listener (whose routes
// come via RDS) and a route configuration, ACKs all of it, and proxies a request to a
// local HTTP server. Then the snapshot changes and Envoy follows, including an update
// of the cluster alone (which only completes if EDS is re-sent after CDS) and a
// configuration Envoy rejects (NACK: reported, parked, not resent), and a renamed cluster
// (the route moves to the new cluster before the old one is removed).
import { createServer, type Server } from 'node:http';
import { freePort } from '@sekisho/devstack/processes';
import type { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SnapshotCache } from './cache';
import { resourceVersion } from './delta';
import type { Resource } from './resources';
import type { AdsServer } from './server';
import {
  type AdsWithEnvoy,
  edsCluster,
  httpListener,
  loadAssignment,
  resourcesOf,
  routeTo,
  serveToRealEnvoy,
} from './test-helpers';
import { typeUrls } from './type-urls';

async function upstream(body: string): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || !address) throw new Error('no port');
  return { server, port: address.port };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The parts of Envoy's /config_dump this test reads.
interface DynamicCluster {
  version_info: string;
  cluster: { name: string; connect_timeout: string };
}
interface DynamicListener {
  name: string;
  active_state?: { version_info: string };
  error_state?: unknown;
}
interface DynamicRoute {
  version_info: string;
  route_config: { name: string };
}
interface DynamicEndpoint {
  endpoint_config: {
    cluster_name: string;
    endpoints: Array<{ lb_endpoints: Array<{ endpoint: { address: { socket_address: { port_value: number } } } }> }>;
  };
}

// Both variants of the protocol: state of the world (api_type GRPC) and delta (DELTA_GRPC).
describe.each(['GRPC', 'DELTA_GRPC'] as const)('ADS server with a real Envoy (%s)', (adsApiType) => {
  let adminUrl: string;
  let listenerPort: number;
  let served: AdsWithEnvoy | undefined;
  let ads: AdsServer;
  let cache: SnapshotCache;
  let registry: Registry;
  const upstreams: Array<{ server: Server; port: number }> = [];

  const snapshot = (opts: { timeoutMs?: number; endpointPort: number; tag: string }): Resource[] => [
    edsCluster('upstream', opts.timeoutMs ?? 1_000),
    loadAssignment('upstream', [{ host: '127.0.0.1', port: opts.endpointPort }]),
    httpListener('ingress', listenerPort, 'ingress_routes'),
    routeTo('ingress_routes', 'upstream', opts.tag),
  ];
  const configDump = async (query = '') =>
    (await (await fetch(`${adminUrl}/config_dump${query}`)).json()) as { configs: Array<Record<string, unknown>> };
  const dumpOf = async (type: string, query = '') => {
    const dump = await configDump(query);
    return dump.configs.find((c) => c['@type'] === `type.googleapis.com/envoy.admin.v3.${type}`) as Record<
      string,
      unknown
    >;
  };
  const get = async () => {
    const res = await fetch(`http://127.0.0.1:${listenerPort}/anything`);
    return { status: res.status, body: await res.text(), tag: res.headers.get('x-route-tag') };
  };
  const ackedEverywhere = () => {
    const node = ads.status().find((s) => s.nodeId === 'envoy-ads-test');
    if (!node) return false;
    return [typeUrls.cluster, typeUrls.endpoint, typeUrls.listener, typeUrls.route].every(
      (t) => node.types[t]?.ackedVersion === cache.get(t)?.version,
    );
  };
  /** The version_info Envoy's config dump shows: the type's (SotW), the resource's content hash (delta). */
  const dumpVersion = (typeUrl: string, name: string) => {
    if (adsApiType === 'GRPC') return cache.get(typeUrl)?.version;
    const r = cache.get(typeUrl)?.resources.get(name);
    return r && resourceVersion(r);
  };
  const sentCount = async (type: string) =>
    (await registry.getSingleMetric('sekisho_xds_responses_sent_total')?.get())?.values.find(
      (v) => v.labels.type === type,
    )?.value ?? 0;

  beforeAll(async () => {
    upstreams.push(await upstream('upstream-1'), await upstream('upstream-2'));
    listenerPort = await freePort();

    // Envoy starts from the project's own bootstrap (envoy/bootstrap.yaml): it knows only the ADS address.
    served = await serveToRealEnvoy(
      'envoy-ads-test',
      resourcesOf(...snapshot({ endpointPort: upstreams[0]?.port ?? 0, tag: 'v1' })),
      // A short drain: the rename test waits for the old cluster's removal.
      { adsApiType, clusterDrainMs: 1_000 },
    );
    ({ cache, registry, ads } = served);
    adminUrl = served.envoy.adminUrl;
  }, 60_000);

  afterAll(async () => {
    await served?.close();
    for (const u of upstreams) await new Promise((resolve) => u.server.close(resolve));
  });

  it('accepts the snapshot (ACKed, active in config_dump) and routes a request to the upstream', async () => {
    try {
      await until('all types ACKed', async () => ackedEverywhere());
      expect(ads.status().find((s) => s.nodeId === 'envoy-ads-test')?.variant).toBe(
        adsApiType === 'GRPC' ? 'sotw' : 'delta',
      );
      const clusters = await dumpOf('ClustersConfigDump');
      const active = clusters.dynamic_active_clusters as DynamicCluster[];
      expect(active.map((c) => [c.cluster.name, c.version_info])).toEqual([
        ['upstream', dumpVersion(typeUrls.cluster, 'upstream')],
      ]);
      expect(clusters.dynamic_warming_clusters ?? []).toEqual([]);

      const listeners = (await dumpOf('ListenersConfigDump')).dynamic_listeners as DynamicListener[];
      expect(listeners.map((l) => [l.name, l.active_state?.version_info, l.error_state])).toEqual([
        ['ingress', dumpVersion(typeUrls.listener, 'ingress'), undefined],
      ]);
      const routes = (await dumpOf('RoutesConfigDump')).dynamic_route_configs as DynamicRoute[];
      expect(routes.map((r) => [r.route_config.name, r.version_info])).toEqual([
        ['ingress_routes', dumpVersion(typeUrls.route, 'ingress_routes')],
      ]);
      const endpoints = (await dumpOf('EndpointsConfigDump', '?include_eds'))
        .dynamic_endpoint_configs as DynamicEndpoint[];
      // Envoy keeps no version_info for EDS in the dump; the ACK above carries it.
      expect(
        endpoints.map((e) => [
          e.endpoint_config.cluster_name,
          e.endpoint_config.endpoints[0]?.lb_endpoints[0]?.endpoint.address.socket_address.port_value,
        ]),
      ).toEqual([['upstream', upstreams[0]?.port]]);

      const clustersText = await (await fetch(`${adminUrl}/clusters`)).text();
      expect(clustersText).toContain(`upstream::127.0.0.1:${upstreams[0]?.port}::`);

      const response = await until('request through Envoy', async () => {
        const r = await get();
        return r.status === 200 ? r : undefined;
      });
      expect(response).toEqual({ status: 200, body: 'upstream-1', tag: 'v1' });
    } catch (error) {
      throw new Error(
        `${error instanceof Error ? error.stack : String(error)}\n--- envoy ---\n${served?.envoy.logs() ?? ''}`,
      );
    }
  }, 60_000);

  it('applies a cluster-only update (EDS re-sent after CDS) and a route change', async () => {
    const before = await sentCount('endpoint');
    cache.setSnapshot(resourcesOf(...snapshot({ timeoutMs: 2_500, endpointPort: upstreams[0]?.port ?? 0, tag: 'v2' })));
    // An updated cluster warms until an EDS response follows the CDS one. Without it
    // Envoy would sit in dynamic_warming_clusters (and hold the CDS ACK) until its
    // 15 s initial_fetch_timeout, so 5 s tells the two apart.
    await until('new versions ACKed', async () => ackedEverywhere(), 5_000);
    const clusters = await until('cluster active at the new version', async () => {
      const c = await dumpOf('ClustersConfigDump');
      const active = c.dynamic_active_clusters as DynamicCluster[];
      return active[0]?.version_info === dumpVersion(typeUrls.cluster, 'upstream') && !c.dynamic_warming_clusters
        ? active
        : undefined;
    });
    expect(clusters[0]?.cluster.connect_timeout).toBe('2.500s');
    expect(await sentCount('endpoint')).toBeGreaterThan(before);
    expect(await get()).toEqual({ status: 200, body: 'upstream-1', tag: 'v2' });
  }, 30_000);

  it('moves traffic when the endpoints change', async () => {
    cache.setSnapshot(resourcesOf(...snapshot({ timeoutMs: 2_500, endpointPort: upstreams[1]?.port ?? 0, tag: 'v2' })));
    await until('upstream-2 serves', async () => (await get()).body === 'upstream-2');
    await until('ACKed', async () => ackedEverywhere());
  }, 30_000);

  it('reports a configuration Envoy rejects, does not resend it, and sends the fix', async () => {
    const good = cache.get(typeUrls.cluster)?.version;
    // connect_timeout must be > 0: Envoy's validation rejects the whole CDS response.
    cache.setSnapshot(
      resourcesOf(...snapshot({ timeoutMs: -1_000, endpointPort: upstreams[1]?.port ?? 0, tag: 'v2' })),
    );
    const bad = cache.get(typeUrls.cluster)?.version;
    const nack = await until('NACK recorded', async () => {
      const node = ads.status().find((s) => s.nodeId === 'envoy-ads-test');
      const t = node?.types[typeUrls.cluster];
      return t?.lastNack?.version === bad ? t : undefined;
    });
    expect(nack.ackedVersion).toBe(good);
    expect(nack.lastNack?.message).toMatch(/connect_timeout|Duration|value must be/i);
    const sentAfterNack = await sentCount('cluster');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await sentCount('cluster')).toBe(sentAfterNack);
    expect((await registry.getSingleMetric('sekisho_xds_nacks_total')?.get())?.values).toEqual(
      expect.arrayContaining([expect.objectContaining({ labels: { type: 'cluster' }, value: 1 })]),
    );
    // Envoy still serves with its last good cluster.
    expect((await get()).body).toBe('upstream-2');

    cache.setSnapshot(resourcesOf(...snapshot({ timeoutMs: 3_000, endpointPort: upstreams[0]?.port ?? 0, tag: 'v3' })));
    await until('fix ACKed', async () => ackedEverywhere());
    await until('fixed config serves', async () => {
      const r = await get();
      return r.body === 'upstream-1' && r.tag === 'v3';
    });
  }, 30_000);
  it('moves the route to a renamed cluster first, then removes the old cluster', async () => {
    const port = upstreams[1]?.port ?? 0;
    cache.setSnapshot(
      resourcesOf(
        edsCluster('upstream-renamed'),
        loadAssignment('upstream-renamed', [{ host: '127.0.0.1', port }]),
        httpListener('ingress', listenerPort, 'ingress_routes'),
        routeTo('ingress_routes', 'upstream-renamed', 'v4'),
      ),
    );
    await until('the renamed cluster serves', async () => {
      const r = await get();
      return r.body === 'upstream-2' && r.tag === 'v4';
    });
    await until('the old cluster is gone and everything is ACKed', async () => {
      const active = (await dumpOf('ClustersConfigDump')).dynamic_active_clusters as DynamicCluster[];
      return active.map((c) => c.cluster.name).join() === 'upstream-renamed' && ackedEverywhere();
    });
  }, 30_000);
});
