import { credentials } from '@grpc/grpc-js';
import { ClusterDiscoveryServiceClient } from '@sekisho/proto/envoy/service/cluster/v3/cds';
import {
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  DiscoveryRequest,
  type DiscoveryResponse,
} from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { ListenerDiscoveryServiceClient } from '@sekisho/proto/envoy/service/listener/v3/lds';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import { resourceVersion } from './delta';
import type { Resource } from './resources';
import { type AdsServer, createAdsServer } from './server';
import {
  AdsTestStream,
  adsClient,
  captureLogger,
  DeltaTestStream,
  deltaVersions,
  edsCluster,
  eventually,
  httpListener,
  loadAssignment,
  namesIn,
  resourcesOf,
  routeTo,
} from './test-helpers';
import { typeUrls } from './type-urls';

const { cluster: CDS, endpoint: EDS, listener: LDS, route: RDS } = typeUrls;

const ep = (port: number) => [{ host: '127.0.0.1', port }];
const base = (): Resource[] => [
  edsCluster('a'),
  edsCluster('b'),
  loadAssignment('a', ep(9001)),
  loadAssignment('b', ep(9002)),
  httpListener('l1', 10_000, 'r1'),
  routeTo('r1', 'a'),
];
const replace = (resources: Resource[], ...changes: Resource[]) => [
  ...resources.filter((r) => !changes.some((c) => c.resource.typeUrl === r.resource.typeUrl && c.name === r.name)),
  ...changes,
];

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

async function start(
  initial: Resource[] = base(),
  opts: { classify?: Parameters<typeof createAdsServer>[0]['classify']; clusterDrainMs?: number } = {},
) {
  const cache = new SnapshotCache();
  cache.setSnapshot(resourcesOf(...initial));
  const registry = new Registry();
  const { logger, records } = captureLogger();
  // No drain unless a test asks: dropped clusters go as soon as the routes are ACKed.
  const ads: AdsServer = createAdsServer({ cache, logger, registry, clusterDrainMs: 0, ...opts });
  const grpc: GrpcServer = await startGrpcServer({ port: 0, register: (s) => ads.register(s) });
  const client = adsClient(grpc.port);
  cleanups.push(async () => {
    client.close();
    ads.close();
    await grpc.close(100);
  });
  const delta = () => {
    const s = new DeltaTestStream(client);
    cleanups.push(() => s.cancel());
    return s;
  };
  const sotw = () => {
    const s = new AdsTestStream(client);
    cleanups.push(() => s.cancel());
    return s;
  };
  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
    return values
      .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
      .reduce((sum, v) => sum + v.value, 0);
  };
  return { cache, ads, grpc, records, delta, sotw, metric };
}

const node = { id: 'delta-node', cluster: 'test' };

/** The version the cache gives a resource (its content hash), for expectations. */
const versionIn = (cache: SnapshotCache, typeUrl: string, name: string) => {
  const r = cache.get(typeUrl)?.resources.get(name);
  if (!r) throw new Error(`no ${name}`);
  return resourceVersion(r);
};

describe('delta ADS (real gRPC)', () => {
  it('answers a wildcard subscription with every resource, each versioned by its content hash', async () => {
    const { cache, delta, metric } = await start();
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    const r = await s.next();
    expect(r.typeUrl).toBe(CDS);
    expect(r.nonce).not.toBe('');
    expect(r.systemVersionInfo).toBe(cache.get(CDS)?.version);
    expect(deltaVersions(r)).toEqual({ a: versionIn(cache, CDS, 'a'), b: versionIn(cache, CDS, 'b') });
    expect(r.removedResources).toEqual([]);
    s.ack(r);
    await s.expectNothing();
    // Without views every node reads the one group: none is unknown.
    expect(await metric('sekisho_xds_unknown_nodes_total')).toBe(0);
  });

  it('sends only the changed resource, removed_resources for a dropped one, and nothing for an identical snapshot', async () => {
    const { cache, delta } = await start();
    const s = delta();
    s.send({ typeUrl: CDS, resourceNamesSubscribe: ['*'] }, node);
    s.ack(await s.next());

    cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('b', 2_000))));
    const changed = await s.next();
    expect(Object.keys(deltaVersions(changed))).toEqual(['b']);
    expect(changed.removedResources).toEqual([]);
    s.ack(changed);

    cache.setSnapshot(
      resourcesOf(
        ...replace(base(), edsCluster('b', 2_000)).filter((r) => r.name !== 'a' || r.resource.typeUrl !== CDS),
      ),
    );
    const removal = await s.next();
    expect(removal.resources).toEqual([]);
    expect(removal.removedResources).toEqual(['a']);
    s.ack(removal);

    // The same content again: nothing to push.
    cache.setSnapshot(
      resourcesOf(
        ...replace(base(), edsCluster('b', 2_000)).filter((r) => r.name !== 'a' || r.resource.typeUrl !== CDS),
      ),
    );
    await s.expectNothing();
  });

  it('serves named subscriptions: what is subscribed, later additions alone, nothing after unsubscribing', async () => {
    const { cache, delta } = await start();
    const s = delta();
    s.send({ typeUrl: EDS, resourceNamesSubscribe: ['a'] }, node);
    const first = await s.next();
    expect(Object.keys(deltaVersions(first))).toEqual(['a']);
    s.send({ typeUrl: EDS, responseNonce: first.nonce, resourceNamesSubscribe: ['b'] });
    const second = await s.next();
    expect(Object.keys(deltaVersions(second))).toEqual(['b']);
    s.send({ typeUrl: EDS, responseNonce: second.nonce, resourceNamesUnsubscribe: ['a'] });
    await s.expectNothing();
    // A change to the unsubscribed name pushes nothing; one to the subscribed name does.
    cache.setSnapshot(resourcesOf(...replace(base(), loadAssignment('a', ep(9100)))));
    await s.expectNothing();
    cache.setSnapshot(resourcesOf(...replace(base(), loadAssignment('a', ep(9100)), loadAssignment('b', ep(9200)))));
    const third = await s.next();
    expect(Object.keys(deltaVersions(third))).toEqual(['b']);
  });

  it('does not resend a rejected version (logged, counted, reported), and heals with the next change', async () => {
    const { cache, delta, records, metric, ads } = await start();
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    s.ack(await s.next());
    cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('a', 3_000))));
    const bad = await s.next();
    s.nack(bad, 'cluster a: bad timeout');
    await s.expectNothing(500);
    expect(records.find((r) => r.event_type === 'xds_nack')).toMatchObject({
      node_id: 'delta-node',
      variant: 'delta',
      type_url: CDS,
      version: bad.systemVersionInfo,
      error_details: 'cluster a: bad timeout',
    });
    expect(await metric('sekisho_xds_nacks_total', { type: 'cluster' })).toBe(1);
    expect(ads.status()[0]?.types[CDS]?.lastNack).toMatchObject({
      version: bad.systemVersionInfo,
      message: 'cluster a: bad timeout',
    });
    // A change elsewhere leaves the parked type alone; the next cluster change goes out.
    cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('a', 3_000), routeTo('r1', 'b'))));
    await s.expectNothing();
    cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('a', 4_000), routeTo('r1', 'b'))));
    const healed = await s.next();
    expect(healed.typeUrl).toBe(CDS);
    expect(deltaVersions(healed)).toEqual({ a: versionIn(cache, CDS, 'a') });
    s.ack(healed);
    await eventually(() => ads.status()[0]?.types[CDS]?.ackedVersion === healed.systemVersionInfo);
  });

  it('ignores the ACK of a stale nonce but applies the subscription it carries', async () => {
    const { cache, delta, ads } = await start();
    const s = delta();
    s.send({ typeUrl: EDS, resourceNamesSubscribe: ['a'] }, node);
    const first = await s.next();
    s.send({ typeUrl: EDS, responseNonce: 'not-a-nonce-of-this-stream', resourceNamesSubscribe: ['b'] });
    await s.expectNothing(); // the first response is still unanswered
    expect(ads.status()[0]?.types[EDS]?.subscribed).toEqual(['a', 'b']);
    expect(ads.status()[0]?.types[EDS]?.ackedVersion).toBeUndefined();
    s.ack(first);
    const second = await s.next();
    expect(deltaVersions(second)).toEqual({ b: versionIn(cache, EDS, 'b') });
  });

  it('on reconnect sends only what differs from initial_resource_versions, and removes what is gone', async () => {
    const { cache, delta } = await start();
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    const held = deltaVersions(await s.next());
    s.cancel();

    // The control plane moved on while the client was away: b changed, a is unchanged.
    cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('b', 2_000))));
    const again = delta();
    again.send({ typeUrl: CDS, initialResourceVersions: { ...held, gone: 'deadbeefdeadbeef' } }, node);
    const r = await again.next();
    expect(deltaVersions(r)).toEqual({ b: versionIn(cache, CDS, 'b') });
    expect(r.removedResources).toEqual(['gone']);

    // A client that holds exactly the current versions gets an empty first answer.
    const current = delta();
    current.send(
      { typeUrl: CDS, initialResourceVersions: { a: versionIn(cache, CDS, 'a'), b: versionIn(cache, CDS, 'b') } },
      node,
    );
    const nothingNew = await current.next();
    expect(nothingNew.resources).toEqual([]);
    expect(nothingNew.removedResources).toEqual([]);
  });

  it('sends the endpoints of an updated cluster again after it (Envoy warms the cluster until then)', async () => {
    const { cache, delta } = await start();
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    s.send({ typeUrl: EDS, resourceNamesSubscribe: ['a', 'b'] });
    const clusters = await s.next();
    const endpoints = await s.next();
    s.ack(clusters);
    s.ack(endpoints);
    cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('a', 2_000))));
    const cds = await s.next();
    expect(Object.keys(deltaVersions(cds))).toEqual(['a']);
    const eds = await s.next();
    expect(eds.typeUrl).toBe(EDS);
    expect(deltaVersions(eds)).toEqual({ a: versionIn(cache, EDS, 'a') });
  });

  it('holds routes until the clusters they may name are ACKed, and keeps a dropped cluster until then', async () => {
    const { cache, delta } = await start();
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    s.send({ typeUrl: RDS, resourceNamesSubscribe: ['r1'] });
    const clusters = await s.next();
    expect(clusters.typeUrl).toBe(CDS);
    await s.expectNothing(); // routes wait for the clusters' ACK
    s.ack(clusters);
    const routes = await s.next();
    expect(routes.typeUrl).toBe(RDS);
    s.ack(routes);

    // Rename cluster a to c: the route moves first, a goes only once the route is ACKed.
    const renamed = [...base().filter((r) => r.name !== 'a' || r.resource.typeUrl !== CDS), edsCluster('c')];
    cache.setSnapshot(resourcesOf(...replace(renamed, routeTo('r1', 'c'))));
    const addC = await s.next();
    expect(addC.typeUrl).toBe(CDS);
    expect(Object.keys(deltaVersions(addC))).toEqual(['c']);
    expect(addC.removedResources).toEqual([]);
    expect(addC.systemVersionInfo).toMatch(/\+retained$/);
    s.ack(addC);
    const moved = await s.next();
    expect(moved.typeUrl).toBe(RDS);
    s.ack(moved);
    const dropA = await s.next();
    expect(dropA.typeUrl).toBe(CDS);
    expect(dropA.removedResources).toEqual(['a']);
    expect(dropA.systemVersionInfo).toBe(cache.get(CDS)?.version);
  });

  it('keeps a dropped cluster’s endpoints until the cluster’s removal is ACKed (no empty cluster under old routes)', async () => {
    const { cache, delta } = await start();
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    s.send({ typeUrl: EDS, resourceNamesSubscribe: ['a', 'b'] });
    s.send({ typeUrl: RDS, resourceNamesSubscribe: ['r1'] });
    const clusters = await s.next();
    const endpoints = await s.next();
    expect([clusters.typeUrl, endpoints.typeUrl]).toEqual([CDS, EDS]);
    s.ack(clusters);
    s.ack(endpoints);
    s.ack(await s.next()); // routes

    // Rename a to c as a definition does: the cluster and its load assignment both change name.
    const renamed = base().filter((r) => r.name !== 'a' || (r.resource.typeUrl !== CDS && r.resource.typeUrl !== EDS));
    cache.setSnapshot(
      resourcesOf(...replace(renamed, edsCluster('c'), loadAssignment('c', ep(9001)), routeTo('r1', 'c'))),
    );
    const addC = await s.next();
    expect(addC.typeUrl).toBe(CDS);
    await s.expectNothing(); // no removal of a's endpoints while a still serves the old route
    // Envoy subscribes to the new cluster's endpoints before it ACKs the cluster.
    s.send({ typeUrl: EDS, resourceNamesSubscribe: ['c'] });
    const cEndpoints = await s.next();
    expect(Object.keys(deltaVersions(cEndpoints))).toEqual(['c']);
    expect(cEndpoints.removedResources).toEqual([]);
    s.ack(cEndpoints);
    s.ack(addC);
    const moved = await s.next();
    expect(moved.typeUrl).toBe(RDS);
    s.ack(moved);
    const dropA = await s.next();
    expect([dropA.typeUrl, dropA.removedResources]).toEqual([CDS, ['a']]);
    await s.expectNothing(); // the cluster removal is unanswered: a's endpoints still stay
    s.ack(dropA);
    const dropEndpoints = await s.next();
    expect([dropEndpoints.typeUrl, dropEndpoints.removedResources]).toEqual([EDS, ['a']]);
    expect(dropEndpoints.systemVersionInfo).toBe(cache.get(EDS)?.version);
  });

  it('removes a dropped cluster only after the drain that follows the routes’ ACK', async () => {
    const { cache, delta } = await start(base(), { clusterDrainMs: 1_500 });
    const s = delta();
    s.send({ typeUrl: CDS }, node);
    s.send({ typeUrl: RDS, resourceNamesSubscribe: ['r1'] });
    s.ack(await s.next());
    s.ack(await s.next());
    const renamed = base().filter((r) => r.name !== 'a' || r.resource.typeUrl !== CDS);
    cache.setSnapshot(resourcesOf(...replace(renamed, edsCluster('c'), routeTo('r1', 'c'))));
    s.ack(await s.next()); // c added, a retained
    const moved = await s.next();
    expect(moved.typeUrl).toBe(RDS);
    s.ack(moved);
    await s.expectNothing(500); // requests that matched the old route may still look a up
    const dropA = await s.next(5_000);
    expect([dropA.typeUrl, dropA.removedResources]).toEqual([CDS, ['a']]);
  });

  it('keeps only the latest snapshot pending for a client that does not answer (slow reader)', async () => {
    const { cache, delta, sotw } = await start();
    const d = delta();
    const w = sotw();
    d.send({ typeUrl: CDS }, node);
    w.send({ typeUrl: CDS }, 'sotw-node');
    const firstDelta = await d.next();
    const firstSotw = await w.next();
    // 50 definitions while neither client answers: nothing queues behind the unanswered response.
    for (let i = 1; i <= 50; i += 1) cache.setSnapshot(resourcesOf(...replace(base(), edsCluster('b', 1_000 + i))));
    await d.expectNothing();
    await w.expectNothing();
    d.ack(firstDelta);
    w.ack(firstSotw);
    const latestDelta = await d.next();
    const latestSotw = await w.next();
    expect(latestDelta.systemVersionInfo).toBe(cache.get(CDS)?.version);
    expect(deltaVersions(latestDelta)).toEqual({ b: versionIn(cache, CDS, 'b') });
    expect(latestSotw.versionInfo).toBe(cache.get(CDS)?.version);
    await d.expectNothing();
    await w.expectNothing();
  });

  it('serves a node that matches no view nothing, and reports it', async () => {
    const { delta, sotw, records, metric, ads } = await start(base(), {
      classify: (n) => (n.cluster === 'sekisho-ingress' ? 'default' : undefined),
    });
    const stranger = delta();
    stranger.send({ typeUrl: CDS }, { id: 'who', cluster: 'elsewhere' });
    const strangerSotw = sotw();
    strangerSotw.send({ typeUrl: CDS }, 'who-too');
    await stranger.expectNothing();
    await strangerSotw.expectNothing();
    expect(await metric('sekisho_xds_unknown_nodes_total')).toBe(2);
    expect(records.find((r) => r.event_type === 'xds_unknown_node')).toMatchObject({ level: 'WARN', node_id: 'who' });
    expect(ads.status().map((st) => st.known)).toEqual([false, false]);

    const ingress = delta();
    ingress.send({ typeUrl: CDS }, { id: 'ingress-1', cluster: 'sekisho-ingress' });
    expect(Object.keys(deltaVersions(await ingress.next()))).toEqual(['a', 'b']);
  });
});

describe('per-type xDS services (no ADS)', () => {
  it('serves listeners over LDS (state of the world) and clusters over CDS (delta) without type_url', async () => {
    const { grpc } = await start();
    const lds = new ListenerDiscoveryServiceClient(`127.0.0.1:${grpc.port}`, credentials.createInsecure());
    const cds = new ClusterDiscoveryServiceClient(`127.0.0.1:${grpc.port}`, credentials.createInsecure());
    cleanups.push(() => {
      lds.close();
      cds.close();
    });
    const listeners = await new Promise<DiscoveryResponse>((resolve, reject) => {
      const call = lds.streamListeners();
      call.on('data', (r: DiscoveryResponse) => {
        resolve(r);
        call.cancel();
      });
      call.on('error', (e: Error & { code?: number }) => (e.code === 1 ? undefined : reject(e)));
      call.write(DiscoveryRequest.fromPartial({ node: { id: 'lds-only', cluster: 'test' } }));
    });
    expect(listeners.typeUrl).toBe(LDS);
    expect(namesIn(listeners)).toEqual(['l1']);

    const clusters = await new Promise<DeltaDiscoveryResponse>((resolve, reject) => {
      const call = cds.deltaClusters();
      call.on('data', (r: DeltaDiscoveryResponse) => {
        resolve(r);
        call.cancel();
      });
      call.on('error', (e: Error & { code?: number }) => (e.code === 1 ? undefined : reject(e)));
      call.write(DeltaDiscoveryRequest.fromPartial({ node: { id: 'cds-only', cluster: 'test' } }));
    });
    expect(clusters.typeUrl).toBe(CDS);
    expect(Object.keys(deltaVersions(clusters))).toEqual(['a', 'b']);
  });
});
