import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import { ConnectionRegistry } from './connections';
import { ConvergenceTracker } from './convergence';
import { createXdsMetrics } from './metrics';
import { captureLogger, edsCluster, loadAssignment, resourcesOf } from './test-helpers';
import { typeUrls } from './type-urls';

// The tracker on its own: a real cache and connection registry, the protocol's reports played by
// hand (what sotw.ts / delta.ts report), the histogram read from a real prom-client registry.

function setup() {
  const cache = new SnapshotCache();
  const registry = new Registry();
  const metrics = createXdsMetrics(registry, cache);
  const connections = new ConnectionRegistry(captureLogger('silent').logger, metrics);
  const snapshot = (port: number, otherPort = 9000) =>
    resourcesOf(
      edsCluster('a'),
      edsCluster('b'),
      loadAssignment('a', [{ host: '127.0.0.1', port }]),
      loadAssignment('b', [{ host: '127.0.0.1', port: otherPort }]),
    );
  cache.setSnapshot(snapshot(1), 'ingress');
  const tracker = new ConvergenceTracker(cache, connections, metrics.convergence);
  const observed = async () => {
    const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'sekisho_xds_convergence_seconds');
    const count = metric?.values.find(
      (v) => (v as { metricName?: string }).metricName === 'sekisho_xds_convergence_seconds_count',
    );
    return count?.value ?? 0;
  };
  /** A proxy of the ingress view subscribed to `names` endpoints, having ACKed the current version. */
  const proxy = (names: '*' | string[]) => {
    const r = connections.open({ peer: 'test', service: 'ads', variant: 'sotw', group: 'ingress' });
    r.node(Node.fromPartial({ id: `node-${r.id}`, cluster: 'sekisho-ingress' }), 'ingress', 'ingress');
    r.subscribed(typeUrls.endpoint, names);
    const version = cache.get(typeUrls.endpoint, 'ingress')?.version ?? '';
    r.sent(typeUrls.endpoint, { version, nonce: `${r.id}-1`, resources: 1, reason: 'initial' });
    r.acked(typeUrls.endpoint, version);
    return r;
  };
  const endpointVersion = () => cache.get(typeUrls.endpoint, 'ingress')?.version ?? '';
  return { cache, tracker, observed, proxy, snapshot, endpointVersion };
}

describe('convergence', () => {
  it('is observed once every proxy of the view ACKed the new version, not before', async () => {
    const { cache, tracker, observed, proxy, snapshot, endpointVersion } = setup();
    const one = proxy('*');
    const two = proxy(['a']);
    cache.setSnapshot(snapshot(2), 'ingress');
    expect(tracker.unconverged()).toEqual(['ingress']);
    one.acked(typeUrls.endpoint, endpointVersion());
    expect(await observed()).toBe(0);
    two.acked(typeUrls.endpoint, 'some-older-version');
    expect(await observed()).toBe(0);
    two.acked(typeUrls.endpoint, endpointVersion());
    expect(await observed()).toBe(1);
    expect(tracker.unconverged()).toEqual([]);
  });

  it('waits for no proxy whose by-name subscription did not change, nor one that disconnected', async () => {
    const { cache, tracker, observed, proxy, snapshot, endpointVersion } = setup();
    const wildcard = proxy('*');
    proxy(['a']); // endpoint "a" stays the same: nothing is sent to it
    const leaving = proxy(['b']);
    cache.setSnapshot(snapshot(1, 9001), 'ingress');
    leaving.closed('cancelled');
    expect(tracker.unconverged()).toEqual(['ingress']);
    wildcard.acked(typeUrls.endpoint, endpointVersion());
    expect(await observed()).toBe(1);
  });

  it('a retained version is not the new one; a NACKed change stays unconverged until the next snapshot replaces it', async () => {
    const { cache, tracker, observed, proxy, snapshot, endpointVersion } = setup();
    const p = proxy('*');
    cache.setSnapshot(snapshot(2), 'ingress');
    p.acked(typeUrls.endpoint, `${endpointVersion()}+retained`);
    expect(await observed()).toBe(0);
    p.nacked(typeUrls.endpoint, { version: endpointVersion(), keptVersion: 'x', message: 'refused' });
    cache.setSnapshot(snapshot(3), 'ingress');
    expect(tracker.unconverged()).toEqual(['ingress']);
    p.acked(typeUrls.endpoint, endpointVersion());
    expect(await observed()).toBe(1);
    // Without a connected proxy, a change observes nothing.
    p.closed('gone');
    cache.setSnapshot(snapshot(4), 'ingress');
    expect(tracker.unconverged()).toEqual([]);
    expect(await observed()).toBe(1);
  });
});
