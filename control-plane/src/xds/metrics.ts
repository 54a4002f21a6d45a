import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { SnapshotCache } from './cache';
import { typeUrls } from './type-urls';

const shortNames = new Map<string, string>(Object.entries(typeUrls).map(([short, url]) => [url, short]));

/** Metric label for a type URL: the short name of type-urls.ts, else the message name. */
export function typeLabel(typeUrl: string): string {
  return shortNames.get(typeUrl) ?? typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}

export interface XdsMetrics {
  connectedStreams: Gauge;
  responsesSent: Counter<'type' | 'variant'>;
  resourcesSent: Counter<'type' | 'variant'>;
  bytesSent: Counter<'type' | 'variant'>;
  convergence: Histogram<'view'>;
  acks: Counter<'type'>;
  nacks: Counter<'type'>;
  unknownNodes: Counter;
}

export function createXdsMetrics(registry: Registry, cache: SnapshotCache): XdsMetrics {
  // Info-style gauge read from the cache at scrape time: one series per group (view) and
  // type, labelled with the version it serves now, so a dashboard sees a push land.
  new Gauge({
    name: 'sekisho_xds_snapshot_version_info',
    help: 'Version each resource type is served at, per view (value is always 1)',
    labelNames: ['group', 'type', 'version'],
    registers: [registry],
    collect() {
      this.reset();
      for (const group of cache.groupNames()) {
        for (const [typeUrl, version] of Object.entries(cache.versions(group))) {
          this.set({ group, type: typeLabel(typeUrl), version }, 1);
        }
      }
    },
  });
  return {
    connectedStreams: new Gauge({
      name: 'sekisho_xds_connected_streams',
      help: 'Open xDS streams (ADS and per-type, state of the world and delta)',
      registers: [registry],
    }),
    responsesSent: new Counter({
      name: 'sekisho_xds_responses_sent_total',
      help: 'Discovery responses sent, by resource type and protocol variant (sotw, delta)',
      labelNames: ['type', 'variant'],
      registers: [registry],
    }),
    resourcesSent: new Counter({
      name: 'sekisho_xds_resources_sent_total',
      help: 'Resources carried by discovery responses, by resource type and protocol variant',
      labelNames: ['type', 'variant'],
      registers: [registry],
    }),
    bytesSent: new Counter({
      name: 'sekisho_xds_bytes_sent_total',
      help: 'Bytes of the discovery responses sent (encoded messages), by resource type and protocol variant',
      labelNames: ['type', 'variant'],
      registers: [registry],
    }),
    convergence: new Histogram({
      name: 'sekisho_xds_convergence_seconds',
      help: "Time from a view's new snapshot to every connected proxy of the view having ACKed what changed for it",
      labelNames: ['view'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    acks: new Counter({
      name: 'sekisho_xds_acks_total',
      help: 'Responses acknowledged (ACK), by resource type',
      labelNames: ['type'],
      registers: [registry],
    }),
    nacks: new Counter({
      name: 'sekisho_xds_nacks_total',
      help: 'Responses rejected (NACK, error_detail set), by resource type',
      labelNames: ['type'],
      registers: [registry],
    }),
    unknownNodes: new Counter({
      name: 'sekisho_xds_unknown_nodes_total',
      help: 'xDS streams whose node matched no view (served nothing)',
      registers: [registry],
    }),
  };
}
