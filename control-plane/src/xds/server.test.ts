import { status as grpcStatus } from '@grpc/grpc-js';
import type { DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import type { Resource } from './resources';
import { type AdsServer, createAdsServer } from './server';
import {
  AdsTestStream,
  adsClient,
  captureLogger,
  edsCluster,
  eventually,
  httpListener,
  loadAssignment,
  namesIn,
  resourcesOf,
  routeTo,
  tlsSecret,
} from './test-helpers';
import { typeUrls } from './type-urls';

const { cluster: CDS, endpoint: EDS, listener: LDS, route: RDS } = typeUrls;

const ep = (port: number) => [{ host: '127.0.0.1', port }];
const baseResources = () => [
  edsCluster('a'),
  edsCluster('b'),
  loadAssignment('a', ep(9001)),
  loadAssignment('b', ep(9002)),
  loadAssignment('c', ep(9003)),
  httpListener('l1', 10_000, 'r1'),
  routeTo('r1', 'a'),
  routeTo('r2', 'b'),
];

/** The base resources with `changes` in place of the base resource of the same type and name, minus `drop`. */
function baseWith(changes: Resource[], drop: Array<{ typeUrl: string; name: string }> = []) {
  const keys = [...changes.map((c) => ({ typeUrl: c.resource.typeUrl, name: c.name })), ...drop];
  const replaced = (r: Resource) => keys.some((k) => k.typeUrl === r.resource.typeUrl && k.name === r.name);
  return resourcesOf(...baseResources().filter((r) => !replaced(r)), ...changes);
}

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

// The ordering tests remove a dropped cluster as soon as the routes are ACKed (no drain);
// the drain has its own test.
async function start(initial: ReturnType<typeof baseResources> | null = baseResources(), clusterDrainMs = 0) {
  const cache = new SnapshotCache();
  if (initial) cache.setSnapshot(resourcesOf(...initial));
  const registry = new Registry();
  const { logger, records } = captureLogger();
  const ads: AdsServer = createAdsServer({ cache, logger, registry, clusterDrainMs });
  const grpc: GrpcServer = await startGrpcServer({ port: 0, register: (s) => ads.register(s) });
  const client = adsClient(grpc.port);
  cleanups.push(async () => {
    client.close();
    ads.close();
    await grpc.close(100);
  });
  const stream = () => {
    const s = new AdsTestStream(client);
    cleanups.push(() => s.cancel());
    return s;
  };
  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
    const match = values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
    return match?.value ?? 0;
  };
  return { cache, ads, client, records, stream, metric };
}

describe('ADS state of the world (real gRPC)', () => {
  it('answers the first request with the type version and a fresh nonce', async () => {
    const { cache, stream } = await start();
    const s = stream();
    s.send({ typeUrl: CDS }, 'node-1');
    const r = await s.next();
    expect(r.typeUrl).toBe(CDS);
    expect(r.versionInfo).toBe(cache.get(CDS)?.version);
    expect(r.versionInfo).not.toBe('');
    expect(r.nonce).not.toBe('');
    expect(namesIn(r)).toEqual(['a', 'b']);
  });

  it('sends nothing again after an ACK and counts it', async () => {
    const { ads, stream, metric } = await start();
    const s = stream();
    s.send({ typeUrl: CDS }, 'node-1');
    const r = await s.next();
    s.ack(r);
    await s.expectNothing();
    expect(await metric('sekisho_xds_acks_total', { type: 'cluster' })).toBe(1);
    expect(ads.status()[0]?.types[CDS]?.ackedVersion).toBe(r.versionInfo);
  });

  it('logs and counts a NACK, does not resend the rejected version, and sends the next change', async () => {
    const { cache, ads, stream, records, metric } = await start();
    const s = stream();
    s.send({ typeUrl: CDS, resourceNames: [] }, 'node-nack');
    const rejected = await s.next();
    s.send({
      typeUrl: CDS,
      versionInfo: '',
      responseNonce: rejected.nonce,
      errorDetail: { code: 3, message: 'cluster a: bad connect_timeout', details: [] },
    });
    await s.expectNothing();

    const nack = records.find((r) => r.event_type === 'xds_nack');
    expect(nack).toMatchObject({
      level: 'WARN',
      node_id: 'node-nack',
      type_url: CDS,
      version: rejected.versionInfo,
      error_details: 'cluster a: bad connect_timeout',
    });
    expect(await metric('sekisho_xds_nacks_total', { type: 'cluster' })).toBe(1);
    expect(ads.status()[0]?.types[CDS]?.lastNack).toMatchObject({
      version: rejected.versionInfo,
      message: 'cluster a: bad connect_timeout',
    });

    // A change elsewhere (a route) leaves the parked cluster type alone.
    cache.setSnapshot(baseWith([routeTo('r2', 'a')]));
    await s.expectNothing();

    // The next cluster change goes out.
    cache.setSnapshot(resourcesOf(...baseResources(), edsCluster('z')));
    const fixed = await s.next();
    expect(fixed.typeUrl).toBe(CDS);
    expect(fixed.versionInfo).not.toBe(rejected.versionInfo);
    expect(fixed.nonce).not.toBe(rejected.nonce);
    expect(namesIn(fixed)).toEqual(['a', 'b', 'z']);
  });

  it('keeps a node parked on a rejected EDS version even when it asks for more names', async () => {
    const { cache, stream } = await start();
    const s = stream();
    s.send({ typeUrl: EDS, resourceNames: ['a'] }, 'node-parked');
    const rejected = await s.next();
    s.send({
      typeUrl: EDS,
      resourceNames: ['a'],
      responseNonce: rejected.nonce,
      errorDetail: { code: 3, message: 'bad endpoint', details: [] },
    });
    s.send({ typeUrl: EDS, resourceNames: ['a', 'b'], responseNonce: rejected.nonce });
    await s.expectNothing();

    cache.setSnapshot(baseWith([loadAssignment('a', ep(7))]));
    const next = await s.next();
    expect(next.versionInfo).not.toBe(rejected.versionInfo);
    expect(namesIn(next)).toEqual(['a', 'b']);
  });

  it('ignores a request whose nonce is not the latest sent on the stream', async () => {
    const { stream } = await start();
    const s = stream();
    s.send({ typeUrl: EDS, resourceNames: ['a'] }, 'node-1');
    const first = await s.next();

    // A new subscription with an outdated nonce: no answer, whatever it asks for.
    s.send({ typeUrl: EDS, resourceNames: ['a', 'b'], versionInfo: first.versionInfo, responseNonce: 'not-a-nonce' });
    await s.expectNothing();

    // The same request with the current nonce is answered.
    s.send({ typeUrl: EDS, resourceNames: ['a', 'b'], versionInfo: first.versionInfo, responseNonce: first.nonce });
    const second = await s.next();
    expect(namesIn(second)).toEqual(['a', 'b']);
  });

  it('accepts a nonce only on the stream that sent it', async () => {
    const { stream } = await start();
    const one = stream();
    const two = stream();
    one.send({ typeUrl: EDS, resourceNames: ['a'] }, 'node-1');
    two.send({ typeUrl: EDS, resourceNames: ['a'] }, 'node-2');
    const r1 = await one.next();
    const r2 = await two.next();
    expect(r1.nonce).not.toBe(r2.nonce);
    // Stream two echoes stream one's nonce with a new name: stale there.
    two.send({ typeUrl: EDS, resourceNames: ['a', 'b'], versionInfo: r1.versionInfo, responseNonce: r1.nonce });
    await two.expectNothing();
  });

  it('sends only the requested EDS/RDS names, answers newly requested names at the same version', async () => {
    const { stream } = await start();
    const s = stream();
    s.send({ typeUrl: EDS, resourceNames: ['a', 'missing'] }, 'node-1');
    const first = await s.next();
    expect(namesIn(first)).toEqual(['a']);

    s.send({
      typeUrl: EDS,
      resourceNames: ['a', 'c', 'missing'],
      versionInfo: first.versionInfo,
      responseNonce: first.nonce,
    });
    const second = await s.next();
    expect(namesIn(second)).toEqual(['a', 'c']);
    expect(second.versionInfo).toBe(first.versionInfo);
    expect(second.nonce).not.toBe(first.nonce);
    s.ack(second, ['a', 'c', 'missing']);

    s.send({ typeUrl: RDS, resourceNames: ['r2'] });
    const routes = await s.next();
    expect(routes.typeUrl).toBe(RDS);
    expect(namesIn(routes)).toEqual(['r2']);
  });

  it('treats empty names and "*" as wildcard for CDS and LDS', async () => {
    const { stream } = await start();
    const s = stream();
    s.send({ typeUrl: CDS, resourceNames: ['*'] }, 'node-1');
    const clusters = await s.next();
    expect(namesIn(clusters)).toEqual(['a', 'b']);
    s.ack(clusters, ['*']);
    s.send({ typeUrl: LDS, resourceNames: [] });
    expect(namesIn(await s.next())).toEqual(['l1']);
  });

  /** Subscribes to CDS, EDS a+b, LDS and RDS r1 and ACKs everything. */
  async function subscribeAll(s: AdsTestStream) {
    s.send({ typeUrl: CDS }, 'node-1');
    s.send({ typeUrl: EDS, resourceNames: ['a', 'b'] });
    for (let i = 0; i < 2; i++) {
      const r = await s.next();
      s.ack(r, r.typeUrl === EDS ? ['a', 'b'] : []);
    }
    s.send({ typeUrl: LDS });
    s.send({ typeUrl: RDS, resourceNames: ['r1'] });
    for (let i = 0; i < 2; i++) {
      const r = await s.next();
      s.ack(r, r.typeUrl === RDS ? ['r1'] : []);
    }
    await s.expectNothing();
  }
  const ackOf = (s: AdsTestStream, r: DiscoveryResponse) =>
    s.ack(r, r.typeUrl === EDS ? ['a', 'b'] : r.typeUrl === RDS ? ['r1'] : []);

  it('pushes only the changed types, and listeners and routes only once the clusters are ACKed', async () => {
    const { cache, stream } = await start();
    const s = stream();
    await subscribeAll(s);

    cache.setSnapshot(baseWith([edsCluster('d'), httpListener('l1', 10_001, 'r1'), routeTo('r1', 'b')]));
    // Make before break: the listener and the route wait for the cluster's ACK.
    const clusters = await s.next();
    expect(clusters.typeUrl).toBe(CDS);
    await s.expectNothing();
    s.ack(clusters);
    const after = [await s.next(), await s.next()];
    expect(after.map((r) => r.typeUrl)).toEqual([LDS, RDS]);
    await s.expectNothing();

    // Only the route changes now; and r2 (not subscribed) changing sends nothing at all.
    for (const r of after) ackOf(s, r);
    cache.setSnapshot(
      baseWith([edsCluster('d'), httpListener('l1', 10_001, 'r1'), routeTo('r1', 'b', 'v2'), routeTo('r2', 'a')]),
    );
    const onlyRoute = await s.next();
    expect(onlyRoute.typeUrl).toBe(RDS);
    s.ack(onlyRoute, ['r1']);
    cache.setSnapshot(
      baseWith([
        edsCluster('d'),
        httpListener('l1', 10_001, 'r1'),
        routeTo('r1', 'b', 'v2'),
        routeTo('r2', 'b', 'other'),
      ]),
    );
    await s.expectNothing();
  });

  it('holds a route change while an endpoint response is unanswered', async () => {
    const { cache, stream } = await start();
    const s = stream();
    await subscribeAll(s);
    cache.setSnapshot(baseWith([loadAssignment('b', ep(9999)), routeTo('r1', 'b')]));
    const endpoints = await s.next();
    expect(endpoints.typeUrl).toBe(EDS);
    await s.expectNothing();
    s.ack(endpoints, ['a', 'b']);
    expect((await s.next()).typeUrl).toBe(RDS);
  });

  it('keeps routes on the last good version while the client rejects the clusters they need', async () => {
    const { cache, stream } = await start();
    const s = stream();
    await subscribeAll(s);
    const withCluster = (connectTimeoutMs: number) => baseWith([edsCluster('a', connectTimeoutMs), routeTo('r1', 'b')]);
    cache.setSnapshot(withCluster(2_000));
    const rejected = await s.next();
    expect(rejected.typeUrl).toBe(CDS);
    s.send({
      typeUrl: CDS,
      responseNonce: rejected.nonce,
      errorDetail: { code: 3, message: 'bad cluster', details: [] },
    });
    await s.expectNothing();

    cache.setSnapshot(withCluster(3_000));
    const fixed = await s.next();
    expect(fixed.typeUrl).toBe(CDS);
    s.ack(fixed);
    expect((await s.next()).typeUrl).toBe(RDS);
  });

  it('keeps a dropped cluster until the routes that named it are replaced, then removes it', async () => {
    const { cache, ads, stream } = await start();
    const s = stream();
    await subscribeAll(s);

    // Cluster a is replaced by c, and route r1 moves from a to c.
    const next = baseWith([edsCluster('c'), routeTo('r1', 'c')], [{ typeUrl: CDS, name: 'a' }]);
    cache.setSnapshot(next);
    const added = await s.next();
    expect(added.typeUrl).toBe(CDS);
    expect(namesIn(added)).toEqual(['a', 'b', 'c']);
    expect(added.versionInfo).toBe(`${cache.get(CDS)?.version}+retained`);
    s.ack(added);
    const route = await s.next();
    expect(route.typeUrl).toBe(RDS);
    await s.expectNothing();

    s.ack(route, ['r1']);
    const removed = await s.next();
    expect(removed.typeUrl).toBe(CDS);
    expect(namesIn(removed)).toEqual(['b', 'c']);
    expect(removed.versionInfo).toBe(cache.get(CDS)?.version);
    s.ack(removed);
    await eventually(() => ads.status()[0]?.types[CDS]?.ackedVersion === cache.get(CDS)?.version);
    await s.expectNothing();
  });

  it('keeps a dropped cluster for the drain after the new routes are ACKed (requests still in the policy filters)', async () => {
    const { cache, stream } = await start(baseResources(), 1_500);
    const s = stream();
    await subscribeAll(s);
    cache.setSnapshot(baseWith([edsCluster('c'), routeTo('r1', 'c')], [{ typeUrl: CDS, name: 'a' }]));
    const added = await s.next();
    s.ack(added);
    const route = await s.next();
    expect(route.typeUrl).toBe(RDS);
    s.ack(route, ['r1']);
    // A request that matched r1 before it moved may still look cluster a up.
    await s.expectNothing(500);
    const removed = await s.next(5_000);
    expect(removed.typeUrl).toBe(CDS);
    expect(namesIn(removed)).toEqual(['b', 'c']);
    expect(removed.versionInfo).toBe(cache.get(CDS)?.version);
  });

  it('keeps a dropped cluster while the client rejects the routes that stop naming it', async () => {
    const { cache, ads, stream } = await start();
    const s = stream();
    await subscribeAll(s);
    cache.setSnapshot(baseWith([routeTo('r1', 'b')], [{ typeUrl: CDS, name: 'a' }]));
    // Nothing new for this client's clusters while a is still named: the route goes first.
    const route = await s.next();
    expect(route.typeUrl).toBe(RDS);
    s.send({
      typeUrl: RDS,
      resourceNames: ['r1'],
      responseNonce: route.nonce,
      errorDetail: { code: 3, message: 'bad route', details: [] },
    });
    // The client still routes to a, so a is not removed.
    await s.expectNothing();
    expect(ads.status()[0]?.types[CDS]?.sentVersion).not.toBe(cache.get(CDS)?.version);
  });

  it('answers the EDS request that follows a CDS update even though endpoints did not change', async () => {
    const { cache, stream } = await start();
    const s = stream();
    s.send({ typeUrl: CDS }, 'envoy-1');
    const cds = await s.next();
    s.send({ typeUrl: EDS, resourceNames: ['a', 'b'] });
    const eds = await s.next();
    s.ack(eds, ['a', 'b']);
    s.ack(cds);
    await s.expectNothing();

    // Cluster a changes (timeout); its endpoints do not.
    cache.setSnapshot(baseWith([edsCluster('a', 2_000)]));
    const cds2 = await s.next();
    expect(cds2.typeUrl).toBe(CDS);
    await s.expectNothing();

    // Envoy's warming cluster re-requests EDS with the latest EDS nonce and version.
    s.send({ typeUrl: EDS, resourceNames: ['a', 'b'], versionInfo: eds.versionInfo, responseNonce: eds.nonce });
    const eds2 = await s.next();
    expect(eds2.typeUrl).toBe(EDS);
    expect(eds2.versionInfo).toBe(eds.versionInfo);
    expect(eds2.nonce).not.toBe(eds.nonce);
    expect(namesIn(eds2)).toEqual(['a', 'b']);

    // Once answered, the same request is an ordinary ACK again.
    s.ack(eds2, ['a', 'b']);
    s.ack(cds2);
    await s.expectNothing();
  });

  it('keeps streams independent: names, ACK/NACK state and pushes are per stream', async () => {
    const { cache, ads, stream } = await start();
    const one = stream();
    const two = stream();
    one.send({ typeUrl: EDS, resourceNames: ['a'] }, 'node-one');
    two.send({ typeUrl: EDS, resourceNames: ['b'] }, 'node-two');
    const r1 = await one.next();
    const r2 = await two.next();
    expect(namesIn(r1)).toEqual(['a']);
    expect(namesIn(r2)).toEqual(['b']);
    one.send({
      typeUrl: EDS,
      resourceNames: ['a'],
      responseNonce: r1.nonce,
      errorDetail: { code: 3, message: 'no', details: [] },
    });
    two.ack(r2, ['b']);

    await eventually(
      () =>
        ads.status().length === 2 && ads.status().every((st) => st.types[EDS]?.ackedVersion || st.types[EDS]?.lastNack),
    );
    const byNode = Object.fromEntries(ads.status().map((st) => [st.nodeId, st.types[EDS]]));
    expect(byNode['node-one']?.lastNack?.message).toBe('no');
    expect(byNode['node-one']?.ackedVersion).toBeUndefined();
    expect(byNode['node-two']?.ackedVersion).toBe(r2.versionInfo);

    // Endpoints of b change: only the stream that asked for b hears of it.
    cache.setSnapshot(baseWith([loadAssignment('b', ep(9999))]));
    const pushed = await two.next();
    expect(namesIn(pushed)).toEqual(['b']);
    await one.expectNothing();
  });

  it('answers subscriptions that arrived before the first snapshot once it is set', async () => {
    const { cache, stream } = await start(null);
    const s = stream();
    s.send({ typeUrl: CDS }, 'early');
    s.send({ typeUrl: RDS, resourceNames: ['r1'] });
    await s.expectNothing(200);
    cache.setSnapshot(resourcesOf(edsCluster('a')));
    const first = await s.next();
    expect(first.typeUrl).toBe(CDS);
    s.ack(first);
    const second = await s.next();
    expect(second.typeUrl).toBe(RDS);
    expect(namesIn(second)).toEqual([]);
  });

  it('remembers the node from the first request only', async () => {
    const { ads, stream } = await start();
    const s = stream();
    s.send({ typeUrl: CDS }, 'first-node');
    const r = await s.next();
    s.send({ typeUrl: EDS, resourceNames: ['a'] });
    await s.next();
    s.ack(r);
    await eventually(() => ads.status()[0]?.types[CDS]?.ackedVersion);
    expect(ads.status()[0]?.nodeId).toBe('first-node');
  });

  it('cleans up a cancelled stream', async () => {
    const { cache, ads, stream, metric, records } = await start();
    const s = stream();
    s.send({ typeUrl: CDS }, 'leaving');
    await s.next();
    expect(ads.status()).toHaveLength(1);
    expect(await metric('sekisho_xds_connected_streams')).toBe(1);
    s.cancel();
    await eventually(() => ads.status().length === 0, 3_000, 'stream state removed');
    expect(await metric('sekisho_xds_connected_streams')).toBe(0);
    expect(records.some((r) => r.event_type === 'xds_stream_closed' && r.node_id === 'leaving')).toBe(true);
    // A later snapshot must not try to write to the dead stream.
    cache.setSnapshot(resourcesOf(edsCluster('x')));
    expect(records.some((r) => r.event_type === 'xds_internal_error')).toBe(false);
  });

  it('ends a stream whose request has no type_url with INVALID_ARGUMENT', async () => {
    const { stream } = await start();
    const s = stream();
    s.send({ typeUrl: '' }, 'n');
    await eventually(() => s.ended, 3_000, 'stream end');
    expect(s.ended).toMatchObject({ code: grpcStatus.INVALID_ARGUMENT });
  });
});

describe('ADS: TLS secrets (SDS over ADS)', () => {
  const SDS = typeUrls.secret;
  const withSecrets = (...secrets: Resource[]) => resourcesOf(...baseResources(), ...secrets);

  it('serves secrets by name, and a rotated one as an SDS response alone', async () => {
    const { cache, stream } = await start(null);
    cache.setSnapshot(withSecrets(tlsSecret('cert_0', 'old'), tlsSecret('cert_1', 'other')));
    const s = stream();
    s.send({ typeUrl: LDS }, 'node-tls');
    s.ack(await s.next());
    s.send({ typeUrl: SDS, resourceNames: ['cert_0', 'missing'] });
    const first = await s.next();
    expect(first.typeUrl).toBe(SDS);
    expect(namesIn(first)).toEqual(['cert_0']);
    s.ack(first, ['cert_0', 'missing']);
    await s.expectNothing();

    // The certificate file was replaced: only the secret changes, so no listener update.
    cache.setSnapshot(withSecrets(tlsSecret('cert_0', 'new'), tlsSecret('cert_1', 'other')));
    const rotated = await s.next();
    expect(rotated.typeUrl).toBe(SDS);
    expect(rotated.versionInfo).not.toBe(first.versionInfo);
    expect(namesIn(rotated)).toEqual(['cert_0']);
    s.ack(rotated, ['cert_0', 'missing']);
    await s.expectNothing();

    // A secret this node did not ask for changes: it is sent nothing.
    cache.setSnapshot(withSecrets(tlsSecret('cert_0', 'new'), tlsSecret('cert_1', 'changed')));
    await s.expectNothing();
  });

  it('sends a changed secret before a listener change of the same snapshot', async () => {
    const { cache, stream } = await start(null);
    cache.setSnapshot(withSecrets(tlsSecret('cert_0', 'old')));
    const s = stream();
    s.send({ typeUrl: LDS }, 'node-tls');
    s.ack(await s.next());
    s.send({ typeUrl: SDS, resourceNames: ['cert_0'] });
    s.ack(await s.next(), ['cert_0']);

    cache.setSnapshot(
      resourcesOf(
        ...baseResources().filter((r) => r.name !== 'l1'),
        httpListener('l1', 10_001, 'r1'),
        tlsSecret('cert_0', 'new'),
      ),
    );
    const secret = await s.next();
    expect(secret.typeUrl).toBe(SDS);
    // The listener waits until the client has answered the secret.
    await s.expectNothing();
    s.ack(secret, ['cert_0']);
    const listener = await s.next();
    expect(listener.typeUrl).toBe(LDS);
  });
});
