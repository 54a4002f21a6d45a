import { status as grpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  type AggregatedDiscoveryServiceServer,
  AggregatedDiscoveryServiceService,
} from '@sekisho/proto/envoy/service/discovery/v3/ads';
import type { DiscoveryRequest, DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import type { GrpcServiceRegistrar } from '@sekisho/service-kit/grpc-server';
import type { Logger } from '@sekisho/service-kit/logger';
import type { Registry } from 'prom-client';
import {
  type CachedResource,
  defaultGroup,
  type SnapshotCache,
  sortByPushOrder,
  type TypeSnapshot,
  versionOf,
} from './cache';
import { createXdsMetrics, typeLabel } from './metrics';
import { typeUrls, wildcardTypes } from './type-urls';

// How the protocol sends what the cache holds: the state-of-the-world ADS rules of
// Envoy's "xDS REST and gRPC protocol" page (see /work/shared/DESIGN.md, xDS checklist).
// Per stream and type at most one response is outstanding: the next one goes out only
// after the client answered (ACK or NACK) the previous one, the way go-control-plane
// reopens a watch only on a request. Make before break, per stream: listeners and routes
// wait until the clusters and endpoints (listeners: and the secrets) they may name are answered, and a cluster the
// snapshot dropped is still sent until the listeners and routes that named it are replaced.

export interface AdsServerOptions {
  cache: SnapshotCache;
  logger: Logger;
  registry: Registry;
  /** Which snapshot group a node reads. Everything is in one group until sidecars get their own. */
  nodeGroup?: (node: Node | undefined) => string;
  /** Reported to clients in DiscoveryResponse.control_plane.identifier. */
  identifier?: string;
  /**
   * Control-channel authorization (channel/identity.ts), asked once per stream when the node
   * arrives, with the stream's verified TLS client certificate (DER): refused streams end with PERMISSION_DENIED, and an
   * allowed one may subscribe only to `types`. Omitted: every node reads every type (plaintext
   * on loopback).
   */
  authorize?: (
    node: Node,
    peerCertificate: Buffer | undefined,
  ) => { ok: true; types: ReadonlySet<string> } | { ok: false; reason: string; identity: string };
}

export interface TypeStatus {
  /** '*' for a wildcard subscription, else the requested names. */
  subscribed: '*' | string[];
  sentVersion?: string;
  ackedVersion?: string;
  ackedAt?: string;
  lastNack?: { version: string; message: string; at: string };
}

export interface StreamStatus {
  stream: number;
  peer: string;
  nodeId?: string;
  nodeCluster?: string;
  group: string;
  connectedAt: string;
  types: Record<string, TypeStatus>;
}

export interface AdsServer {
  /** The gRPC implementation; `register` adds it to a server. */
  readonly implementation: AggregatedDiscoveryServiceServer;
  register(server: GrpcServiceRegistrar): void;
  /** One entry per open stream. */
  status(): StreamStatus[];
  /** Ends every open stream with OK and refuses new ones (shutdown). */
  close(): void;
}

type Call = ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;

interface Sent {
  nonce: string;
  /** The response's version_info. */
  version: string;
  /** The snapshot version the response was built from. */
  snapshotVersion: string;
  /** versionOf the resources actually sent: what this subscriber has once it ACKs. */
  fingerprint: string;
  namesKey: string;
  resources: readonly CachedResource[];
}

interface TypeState {
  names: '*' | ReadonlySet<string>;
  sent?: Sent;
  /** A response is out and its ACK/NACK has not come back yet. */
  awaiting: boolean;
  acked?: { version: string; fingerprint: string; at: Date };
  /** The snapshot version the client rejected last; never sent again to this stream. */
  rejectedVersion?: string;
  lastNack?: { version: string; message: string; at: Date };
}

interface StreamState {
  id: number;
  call: Call;
  peer: string;
  connectedAt: Date;
  node?: Node;
  group: string;
  types: Map<string, TypeState>;
  nonceSeq: number;
  /**
   * A CDS response went out and no EDS response followed it yet. Envoy keeps an
   * updated cluster warming until an EDS response arrives after it, even when the
   * endpoints did not change (go-control-plane#245, envoy#13009), so the next EDS
   * request is answered regardless of version.
   */
  edsOwed: boolean;
  /** Types this stream may subscribe to, once authorized (undefined: no authorization configured). */
  allowedTypes?: ReadonlySet<string>;
  unwatch: () => void;
  closed: boolean;
}

const namesKeyOf = (names: TypeState['names']) => (names === '*' ? '*' : [...names].sort().join('\n'));

const byName = (a: CachedResource, b: CachedResource) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** What a subscription gets: everything (wildcard) or the requested names that exist. */
function select(snapshot: TypeSnapshot, names: TypeState['names']): CachedResource[] {
  if (names === '*') return [...snapshot.resources.values()];
  return [...names].flatMap((name) => snapshot.resources.get(name) ?? []);
}

/** Types whose resources name clusters: routes, and listeners through their filters. */
const clusterUsers: readonly string[] = [typeUrls.listener, typeUrls.route];

export function createAdsServer(opts: AdsServerOptions): AdsServer {
  const { cache, logger } = opts;
  const log = logger.child({ category: 'technical', component: 'xds' });
  const metrics = createXdsMetrics(opts.registry, cache);
  const nodeGroup = opts.nodeGroup ?? (() => defaultGroup);
  const identifier = opts.identifier ?? 'sekisho-control-plane';
  const streams = new Set<StreamState>();
  let nextStreamId = 1;
  let closed = false;

  const nodeFields = (s: StreamState) => ({ stream: s.id, node_id: s.node?.id, group: s.group });

  const watchGroup = (s: StreamState) => {
    s.unwatch();
    s.unwatch = cache.watch(s.group, () => {
      // Contain a failure to this stream: setSnapshot goes on to notify the others.
      try {
        respondAll(s);
      } catch (error) {
        internalError(s, error);
      }
    });
  };

  const cleanup = (s: StreamState, reason: string) => {
    if (s.closed) return;
    s.closed = true;
    s.unwatch();
    streams.delete(s);
    metrics.connectedStreams.dec();
    log.info({ ...nodeFields(s), event_type: 'xds_stream_closed', reason }, 'xDS stream closed');
  };

  const fail = (s: StreamState, code: grpcStatus, details: string) => {
    cleanup(s, details);
    s.call.emit('error', { code, details });
  };

  const internalError = (s: StreamState, error: unknown) => {
    log.error(
      { ...nodeFields(s), event_type: 'xds_internal_error', error_details: String(error) },
      'xDS stream failed; closing it (the client reconnects)',
    );
    fail(s, grpcStatus.INTERNAL, 'internal error');
  };

  /** A response of this type is unanswered, or the client rejected the current version. */
  const unsettled = (s: StreamState, typeUrl: string) => {
    const t = s.types.get(typeUrl);
    if (!t) return false;
    return (
      t.awaiting || (t.rejectedVersion !== undefined && t.rejectedVersion === cache.get(typeUrl, s.group)?.version)
    );
  };

  /** Whether the client ACKed exactly what it should have of `typeUrl` now (true when not subscribed). */
  const upToDate = (s: StreamState, typeUrl: string) => {
    const t = s.types.get(typeUrl);
    if (!t) return true;
    const snapshot = cache.get(typeUrl, s.group);
    return !t.awaiting && snapshot !== undefined && t.acked?.fingerprint === versionOf(select(snapshot, t.names));
  };

  /**
   * Sends the type's current state if this subscriber lacks it; see the rules inline.
   * `edsRequest`: called for an EDS request of the client (see StreamState.edsOwed).
   */
  const maybeRespond = (s: StreamState, typeUrl: string, edsRequest = false) => {
    const t = s.types.get(typeUrl);
    if (!t || t.awaiting || s.closed) return;
    const snapshot = cache.get(typeUrl, s.group);
    if (!snapshot) return; // no snapshot yet: the first setSnapshot answers
    // Parked after a NACK: the rejected version stays unsent until the snapshot moves on.
    if (snapshot.version === t.rejectedVersion) return;
    // Make before break: a route must not name a cluster Envoy does not have yet, or one
    // still warming for its endpoints. Envoy asks for a new cluster's endpoints before it
    // ACKs the CDS response, so listeners and routes wait until no CDS or EDS response is
    // unanswered, and stay on the last good version while the client rejects the current
    // clusters or endpoints.
    if (clusterUsers.includes(typeUrl) && (unsettled(s, typeUrls.cluster) || unsettled(s, typeUrls.endpoint))) return;
    // Likewise a listener waits for the TLS secrets it may name (a rotated certificate goes
    // out before a listener change of the same snapshot). Envoy asks for a new secret only once
    // it has the listener naming it, and keeps that listener warming until the secret arrives.
    if (typeUrl === typeUrls.listener && unsettled(s, typeUrls.secret)) return;

    const selected = select(snapshot, t.names);
    // ...and a cluster the snapshot dropped is kept until this client's listeners and
    // routes are the current ones, so requests on the old routes still find it.
    const retained =
      typeUrl === typeUrls.cluster && t.sent && !clusterUsers.every((type) => upToDate(s, type))
        ? t.sent.resources.filter((r) => !snapshot.resources.has(r.name))
        : [];
    selected.push(...retained);
    selected.sort(byName);
    const fingerprint = versionOf(selected);
    const namesKey = namesKeyOf(t.names);

    const reason = !t.sent
      ? 'initial'
      : fingerprint !== t.sent.fingerprint
        ? 'changed'
        : namesKey !== t.sent.namesKey
          ? 'names'
          : edsRequest && s.edsOwed
            ? 'after-cds'
            : undefined;
    if (!reason) return;

    s.nonceSeq += 1;
    const nonce = `${s.id}-${s.nonceSeq}`;
    // A response that still carries dropped clusters is not the snapshot's version.
    const version = retained.length > 0 ? `${snapshot.version}+retained` : snapshot.version;
    const response: DiscoveryResponse = {
      versionInfo: version,
      resources: selected.map((r) => r.resource),
      canary: false,
      typeUrl,
      nonce,
      controlPlane: { identifier },
    };
    t.sent = { nonce, version, snapshotVersion: snapshot.version, fingerprint, namesKey, resources: selected };
    t.awaiting = true;
    if (typeUrl === typeUrls.cluster) s.edsOwed = true;
    if (typeUrl === typeUrls.endpoint) s.edsOwed = false;
    s.call.write(response);
    metrics.responsesSent.inc({ type: typeLabel(typeUrl) });
    log.debug(
      {
        ...nodeFields(s),
        event_type: 'xds_response_sent',
        type_url: typeUrl,
        version,
        nonce,
        resources: selected.length,
        retained: retained.map((r) => r.name),
        reason,
      },
      'xDS response sent',
    );
  };

  /** Everything this stream is owed, in push order (after a snapshot change or an answer). */
  const respondAll = (s: StreamState) => {
    for (const typeUrl of sortByPushOrder(s.types.keys())) {
      if (s.closed) return;
      maybeRespond(s, typeUrl);
    }
  };

  const onRequest = (s: StreamState, request: DiscoveryRequest) => {
    if (s.closed) return;
    if (!s.node && request.node) {
      // Envoy sends the node on the first request only (set_node_on_first_message_only).
      s.node = request.node;
      if (opts.authorize) {
        const decision = opts.authorize(s.node, s.call.getAuthContext()?.sslPeerCertificate?.raw);
        if (!decision.ok) {
          log.warn(
            {
              ...nodeFields(s),
              event_type: 'xds_node_refused',
              peer: s.peer,
              node_cluster: s.node.cluster,
              identity: decision.identity,
              error_details: decision.reason,
            },
            'xDS client refused: its certificate does not allow the view its node claims',
          );
          fail(s, grpcStatus.PERMISSION_DENIED, decision.reason);
          return;
        }
        s.allowedTypes = decision.types;
      }
      const group = nodeGroup(s.node);
      if (group !== s.group) {
        s.group = group;
        watchGroup(s);
      }
      log.info(
        { ...nodeFields(s), event_type: 'xds_node_connected', peer: s.peer, node_cluster: s.node.cluster },
        'xDS node connected',
      );
    }
    const typeUrl = request.typeUrl;
    if (!typeUrl) {
      fail(s, grpcStatus.INVALID_ARGUMENT, 'type_url is required on an aggregated (ADS) stream');
      return;
    }
    if (opts.authorize && !s.allowedTypes?.has(typeUrl)) {
      const reason = s.node
        ? `this client's view does not include ${typeUrl}`
        : 'the first request must carry the node';
      log.warn(
        { ...nodeFields(s), event_type: 'xds_type_refused', type_url: typeUrl, error_details: reason },
        'xDS request refused',
      );
      fail(s, grpcStatus.PERMISSION_DENIED, reason);
      return;
    }

    let t = s.types.get(typeUrl);
    if (!t) {
      t = { names: '*', awaiting: false };
      s.types.set(typeUrl, t);
    }
    // A nonce is valid only on its stream and only the latest one counts: anything
    // else answers a response that has since been superseded, so it is ignored.
    if (t.sent && request.responseNonce !== t.sent.nonce) {
      log.debug(
        { ...nodeFields(s), event_type: 'xds_stale_request', type_url: typeUrl, nonce: request.responseNonce },
        'ignoring request with a stale nonce',
      );
      return;
    }

    if (t.sent && t.awaiting) {
      t.awaiting = false;
      if (request.errorDetail) {
        const message = request.errorDetail.message;
        t.rejectedVersion = t.sent.snapshotVersion;
        t.lastNack = { version: t.sent.version, message, at: new Date() };
        metrics.nacks.inc({ type: typeLabel(typeUrl) });
        log.warn(
          {
            ...nodeFields(s),
            event_type: 'xds_nack',
            type_url: typeUrl,
            version: t.sent.version,
            kept_version: request.versionInfo,
            error_details: message,
          },
          'xDS client rejected a configuration; it keeps its last good version',
        );
      } else {
        const previous = t.acked?.version;
        t.acked = { version: t.sent.version, fingerprint: t.sent.fingerprint, at: new Date() };
        metrics.acks.inc({ type: typeLabel(typeUrl) });
        // Info once per version a node takes on (the operator's "did it apply?"), debug otherwise.
        log[previous === t.sent.version ? 'debug' : 'info'](
          { ...nodeFields(s), event_type: 'xds_ack', type_url: typeUrl, version: t.sent.version },
          'xDS client applied a configuration',
        );
      }
    }

    const names = request.resourceNames;
    t.names =
      wildcardTypes.has(typeUrl) && (names.length === 0 || names.includes('*')) ? '*' : new Set(names.filter(Boolean));
    maybeRespond(s, typeUrl, typeUrl === typeUrls.endpoint);
    // An answer can release what waited for it (routes after clusters, cluster removals after routes).
    respondAll(s);
  };

  const implementation: AggregatedDiscoveryServiceServer = {
    streamAggregatedResources(call: Call) {
      if (closed) {
        call.emit('error', { code: grpcStatus.UNAVAILABLE, details: 'control plane is shutting down' });
        return;
      }
      const s: StreamState = {
        id: nextStreamId++,
        call,
        peer: call.getPeer(),
        connectedAt: new Date(),
        group: nodeGroup(undefined),
        types: new Map(),
        nonceSeq: 0,
        edsOwed: false,
        unwatch: () => {},
        closed: false,
      };
      streams.add(s);
      metrics.connectedStreams.inc();
      watchGroup(s);
      call.on('data', (request: DiscoveryRequest) => {
        try {
          onRequest(s, request);
        } catch (error) {
          internalError(s, error);
        }
      });
      call.on('end', () => {
        // The client half-closed: it will send nothing more, so finish our side too.
        cleanup(s, 'client ended the stream');
        call.end();
      });
      call.on('cancelled', () => cleanup(s, 'cancelled'));
      call.on('error', (error: Error) => cleanup(s, `error: ${error.message}`));
      call.on('close', () => cleanup(s, 'closed'));
    },
    deltaAggregatedResources(call) {
      call.on('error', () => {});
      call.emit('error', {
        code: grpcStatus.UNIMPLEMENTED,
        details: 'incremental (delta) xDS is not implemented; use state of the world',
      });
    },
  };

  return {
    implementation,
    register: (server) => server.addService(AggregatedDiscoveryServiceService, implementation),
    status: () =>
      [...streams].map((s) => ({
        stream: s.id,
        peer: s.peer,
        nodeId: s.node?.id,
        nodeCluster: s.node?.cluster,
        group: s.group,
        connectedAt: s.connectedAt.toISOString(),
        types: Object.fromEntries(
          sortByPushOrder(s.types.keys()).map((typeUrl) => {
            const t = s.types.get(typeUrl) as TypeState;
            const status: TypeStatus = {
              subscribed: t.names === '*' ? '*' : [...t.names].sort(),
              sentVersion: t.sent?.version,
              ackedVersion: t.acked?.version,
              ackedAt: t.acked?.at.toISOString(),
              lastNack: t.lastNack && { ...t.lastNack, at: t.lastNack.at.toISOString() },
            };
            return [typeUrl, status];
          }),
        ),
      })),
    close: () => {
      closed = true;
      for (const s of [...streams]) {
        cleanup(s, 'control plane shutting down');
        s.call.end();
      }
    },
  };
}
