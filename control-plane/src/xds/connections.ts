import type { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import type { Logger } from '@sekisho/service-kit/logger';
import { sortByPushOrder } from './cache';
import { typeLabel, type XdsMetrics } from './metrics';

// Reporting, apart from the protocol: every stream tells its recorder what happened (node,
// subscriptions, responses, ACKs, NACKs) and the recorder logs, counts and keeps the state
// an operator asks about. `Connections` is the read-only side, for /status and an admin API.

export type XdsVariant = 'sotw' | 'delta';

export interface TypeStatus {
  /** '*' for a wildcard subscription, else the requested names. */
  subscribed: '*' | string[];
  sentVersion?: string;
  ackedVersion?: string;
  ackedAt?: string;
  /** The last NACK: the version the client refused and its error. */
  lastNack?: { version: string; message: string; at: string };
}

export interface StreamStatus {
  stream: number;
  /** 'ads', or the short type name of a per-type service ('listener', 'cluster', …). */
  service: string;
  variant: XdsVariant;
  peer: string;
  nodeId?: string;
  nodeCluster?: string;
  /** The view the node was classified into; undefined until the node is known or when no view matched. */
  view?: string;
  /** False when the node matched no view: it is served nothing. */
  known: boolean;
  /** The snapshot group the stream reads (the view's name; 'default' without views). */
  group: string;
  connectedAt: string;
  types: Record<string, TypeStatus>;
}

/** Read-only state of the open xDS connections. */
export interface Connections {
  list(): StreamStatus[];
  get(stream: number): StreamStatus | undefined;
}

interface TypeRecord {
  subscribed: '*' | string[];
  sentVersion?: string;
  acked?: { version: string; at: Date };
  lastNack?: { version: string; message: string; at: Date };
}

export interface ConnectionRecorder {
  readonly id: number;
  /** Fields every log record of this stream carries. */
  fields(): Record<string, unknown>;
  node(node: Node, view: string | undefined, group: string): void;
  subscribed(typeUrl: string, names: '*' | Iterable<string>): void;
  sent(
    typeUrl: string,
    details: {
      version: string;
      nonce: string;
      resources: number;
      /** Encoded size of the response message. */
      bytes?: number;
      removed?: number;
      reason: string;
      retained?: string[];
    },
  ): void;
  acked(typeUrl: string, version: string): void;
  nacked(typeUrl: string, details: { version: string; keptVersion: string; message: string }): void;
  stale(typeUrl: string, nonce: string): void;
  closed(reason: string): void;
}

/** What a registry listener hears (the convergence tracker, convergence.ts). */
export type ConnectionEvent =
  | { kind: 'acked'; stream: number; typeUrl: string; version: string }
  | { kind: 'closed'; stream: number };

export class ConnectionRegistry implements Connections {
  private readonly listeners = new Set<(event: ConnectionEvent) => void>();
  private readonly records = new Map<number, { status: Omit<StreamStatus, 'types'>; types: Map<string, TypeRecord> }>();
  private nextId = 1;
  private readonly log: Logger;

  constructor(
    logger: Logger,
    private readonly metrics: XdsMetrics,
  ) {
    this.log = logger.child({ category: 'technical', component: 'xds' });
  }

  /** Calls `listener` after every ACK and closed stream. Returns the unsubscribe. */
  onEvent(listener: (event: ConnectionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: ConnectionEvent): void {
    for (const listener of [...this.listeners]) listener(event);
  }

  list(): StreamStatus[] {
    return [...this.records.keys()].flatMap((id) => this.get(id) ?? []);
  }

  get(stream: number): StreamStatus | undefined {
    const record = this.records.get(stream);
    if (!record) return undefined;
    const types: Record<string, TypeStatus> = {};
    for (const typeUrl of sortByPushOrder(record.types.keys())) {
      const t = record.types.get(typeUrl) as TypeRecord;
      types[typeUrl] = {
        subscribed: t.subscribed === '*' ? '*' : [...t.subscribed],
        sentVersion: t.sentVersion,
        ackedVersion: t.acked?.version,
        ackedAt: t.acked?.at.toISOString(),
        lastNack: t.lastNack && { ...t.lastNack, at: t.lastNack.at.toISOString() },
      };
    }
    return { ...record.status, types };
  }

  open(opts: { peer: string; service: string; variant: XdsVariant; group: string }): ConnectionRecorder {
    const id = this.nextId++;
    const status: Omit<StreamStatus, 'types'> = {
      stream: id,
      service: opts.service,
      variant: opts.variant,
      peer: opts.peer,
      known: true,
      group: opts.group,
      connectedAt: new Date().toISOString(),
    };
    const types = new Map<string, TypeRecord>();
    this.records.set(id, { status, types });
    this.metrics.connectedStreams.inc();
    const typeRecord = (typeUrl: string) => {
      let t = types.get(typeUrl);
      if (!t) {
        t = { subscribed: [] };
        types.set(typeUrl, t);
      }
      return t;
    };
    const fields = () => ({ stream: id, node_id: status.nodeId, view: status.view, variant: opts.variant });
    const log = this.log;
    const metrics = this.metrics;
    const records = this.records;
    const emit = (event: ConnectionEvent) => this.emit(event);
    return {
      id,
      fields,
      node(node, view, group) {
        status.nodeId = node.id;
        status.nodeCluster = node.cluster;
        status.view = view;
        status.known = view !== undefined;
        status.group = group;
        if (view === undefined) {
          metrics.unknownNodes.inc();
          log.warn(
            { ...fields(), event_type: 'xds_unknown_node', peer: opts.peer, node_cluster: node.cluster },
            'xDS node matches no view; it is served nothing',
          );
        } else {
          log.info(
            { ...fields(), event_type: 'xds_node_connected', peer: opts.peer, node_cluster: node.cluster },
            'xDS node connected',
          );
        }
      },
      subscribed(typeUrl, names) {
        typeRecord(typeUrl).subscribed = names === '*' ? '*' : [...names].sort();
      },
      sent(typeUrl, details) {
        typeRecord(typeUrl).sentVersion = details.version;
        metrics.responsesSent.inc({ type: typeLabel(typeUrl), variant: opts.variant });
        metrics.resourcesSent.inc({ type: typeLabel(typeUrl), variant: opts.variant }, details.resources);
        if (details.bytes !== undefined)
          metrics.bytesSent.inc({ type: typeLabel(typeUrl), variant: opts.variant }, details.bytes);
        log.debug(
          {
            ...fields(),
            event_type: 'xds_response_sent',
            type_url: typeUrl,
            version: details.version,
            nonce: details.nonce,
            resources: details.resources,
            removed: details.removed,
            retained: details.retained,
            reason: details.reason,
          },
          'xDS response sent',
        );
      },
      acked(typeUrl, version) {
        const t = typeRecord(typeUrl);
        const previous = t.acked?.version;
        t.acked = { version, at: new Date() };
        metrics.acks.inc({ type: typeLabel(typeUrl) });
        // Info once per version a node takes on (the operator's "did it apply?"), debug otherwise.
        log[previous === version ? 'debug' : 'info'](
          { ...fields(), event_type: 'xds_ack', type_url: typeUrl, version },
          'xDS client applied a configuration',
        );
        emit({ kind: 'acked', stream: id, typeUrl, version });
      },
      nacked(typeUrl, details) {
        typeRecord(typeUrl).lastNack = { version: details.version, message: details.message, at: new Date() };
        metrics.nacks.inc({ type: typeLabel(typeUrl) });
        log.warn(
          {
            ...fields(),
            event_type: 'xds_nack',
            type_url: typeUrl,
            version: details.version,
            kept_version: details.keptVersion,
            error_details: details.message,
          },
          'xDS client rejected a configuration; it keeps its last good version',
        );
      },
      stale(typeUrl, nonce) {
        log.debug(
          { ...fields(), event_type: 'xds_stale_request', type_url: typeUrl, nonce },
          'ignoring request with a stale nonce',
        );
      },
      closed(reason) {
        if (!records.delete(id)) return;
        metrics.connectedStreams.dec();
        log.info({ ...fields(), event_type: 'xds_stream_closed', reason }, 'xDS stream closed');
        emit({ kind: 'closed', stream: id });
      },
    };
  }
}
