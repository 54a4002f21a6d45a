import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import { ConnectionRegistry } from './connections';
import { createXdsMetrics } from './metrics';
import { captureLogger } from './test-helpers';
import { typeUrls } from './type-urls';

function registry() {
  const metrics = new Registry();
  const { logger, records } = captureLogger();
  return {
    connections: new ConnectionRegistry(logger, createXdsMetrics(metrics, new SnapshotCache())),
    records,
    metrics,
  };
}

describe('reporting: the state of each connection', () => {
  it('keeps node, view, subscription, sent and ACKed versions and the last NACK, read-only', () => {
    const { connections } = registry();
    const r = connections.open({ peer: 'ipv4:127.0.0.1:5000', service: 'ads', variant: 'delta', group: '' });
    r.node(Node.fromPartial({ id: 'ingress-1', cluster: 'sekisho-ingress' }), 'ingress', 'ingress');
    r.subscribed(typeUrls.route, new Set(['b', 'a']));
    r.sent(typeUrls.route, { version: 'v1', nonce: '1-1', resources: 1, reason: 'initial' });
    r.acked(typeUrls.route, 'v1');
    r.sent(typeUrls.route, { version: 'v2', nonce: '1-2', resources: 1, reason: 'changed' });
    r.nacked(typeUrls.route, { version: 'v2', keptVersion: 'v1', message: 'route: bad regex' });

    const status = connections.get(r.id);
    expect(status).toMatchObject({
      stream: r.id,
      service: 'ads',
      variant: 'delta',
      nodeId: 'ingress-1',
      nodeCluster: 'sekisho-ingress',
      view: 'ingress',
      known: true,
      types: {
        [typeUrls.route]: {
          subscribed: ['a', 'b'],
          sentVersion: 'v2',
          ackedVersion: 'v1',
          lastNack: { version: 'v2', message: 'route: bad regex' },
        },
      },
    });
    // What a caller gets is a copy: changing it changes nothing kept.
    (status?.types[typeUrls.route] as { ackedVersion?: string }).ackedVersion = 'forged';
    expect(connections.get(r.id)?.types[typeUrls.route]?.ackedVersion).toBe('v1');
  });

  it('reports a node of no view (log and metric) and forgets a closed connection', async () => {
    const { connections, records, metrics } = registry();
    const r = connections.open({ peer: 'p', service: 'listener', variant: 'sotw', group: '' });
    r.node(Node.fromPartial({ id: 'stranger', cluster: 'elsewhere' }), undefined, '');
    expect(connections.list()).toEqual([
      expect.objectContaining({ known: false, view: undefined, service: 'listener' }),
    ]);
    expect(records).toContainEqual(expect.objectContaining({ event_type: 'xds_unknown_node', node_id: 'stranger' }));
    expect((await metrics.getSingleMetric('sekisho_xds_unknown_nodes_total')?.get())?.values[0]?.value).toBe(1);
    r.closed('cancelled');
    r.closed('cancelled again');
    expect(connections.list()).toEqual([]);
    expect(records.filter((x) => x.event_type === 'xds_stream_closed')).toHaveLength(1);
    expect((await metrics.getSingleMetric('sekisho_xds_connected_streams')?.get())?.values[0]?.value).toBe(0);
  });
});
