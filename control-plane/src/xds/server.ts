import { status as grpcStatus, type ServerDuplexStream, type ServiceDefinition } from '@grpc/grpc-js';
import type { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { ClusterDiscoveryServiceService } from '@sekisho/proto/envoy/service/cluster/v3/cds';
import {
  type AggregatedDiscoveryServiceServer,
  AggregatedDiscoveryServiceService,
} from '@sekisho/proto/envoy/service/discovery/v3/ads';
import type { DeltaDiscoveryRequest, DiscoveryRequest } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { EndpointDiscoveryServiceService } from '@sekisho/proto/envoy/service/endpoint/v3/eds';
import { ListenerDiscoveryServiceService } from '@sekisho/proto/envoy/service/listener/v3/lds';
import { RouteDiscoveryServiceService } from '@sekisho/proto/envoy/service/route/v3/rds';
import { SecretDiscoveryServiceService } from '@sekisho/proto/envoy/service/secret/v3/sds';
import type { GrpcServiceRegistrar } from '@sekisho/service-kit/grpc-server';
import type { Logger } from '@sekisho/service-kit/logger';
import type { Registry } from 'prom-client';
import { defaultGroup, type SnapshotCache } from './cache';
import { ConnectionRegistry, type Connections, type StreamStatus, type XdsVariant } from './connections';
import { ConvergenceTracker } from './convergence';
import { DeltaProtocol } from './delta';
import { acceptingEncoded } from './encode';
import { createXdsMetrics, typeLabel } from './metrics';
import { SotwProtocol } from './sotw';
import type { StreamContext, StreamProtocol } from './stream';
import { typeUrls } from './type-urls';

// The xDS gRPC services: ADS (state of the world and delta) and the per-type services
// (LDS, RDS, CDS, EDS, SDS, each both variants) for clients that do not aggregate. This
// file owns the call: the node and its view, the cache watch, backpressure and the end of
// the stream. What goes out and when is the protocol's (sotw.ts, delta.ts) and the ordering
// policy's (ordering.ts); what an operator sees is the reporting's (connections.ts).

export type { StreamStatus, TypeStatus } from './connections';

export interface AdsServerOptions {
  cache: SnapshotCache;
  logger: Logger;
  registry: Registry;
  /**
   * The view (snapshot group) a node reads, or undefined when it matches none: it is then
   * served nothing and reported. Without it every node reads the 'default' group.
   */
  classify?: (node: Node) => string | undefined;
  /** Reported to clients in control_plane.identifier. */
  identifier?: string;
  /**
   * How long a cluster the definition dropped is still served after a stream ACKed the
   * routes that no longer name it, for requests that matched an old route and are still in
   * the policy filters (ordering.ts). Default 10 s: longer than ext_authz's and the rate-limit
   * filter's timeouts together in the usual definitions. 0 removes it as soon as the routes are ACKed.
   */
  clusterDrainMs?: number;
  /**
   * Control-channel authorization (channel/identity.ts), asked once per stream when the node
   * arrives, with the view `classify` gave it and the stream's verified TLS client certificate
   * (DER): a refused stream ends with PERMISSION_DENIED, and an allowed one may subscribe only
   * to `types`. Omitted: every node reads its view's types (plaintext on loopback).
   */
  authorize?: (
    node: Node,
    view: string | undefined,
    peerCertificate: Buffer | undefined,
  ) =>
    | { ok: true; types: ReadonlySet<string>; revalidate?: () => string | undefined }
    | { ok: false; reason: string; identity: string };
}

export interface AdsServer {
  /** Adds ADS and the per-type services to a server. */
  register(server: GrpcServiceRegistrar): void;
  /** One entry per open stream. */
  status(): StreamStatus[];
  /** The read-only state of the open connections (for an admin API). */
  readonly connections: Connections;
  /** Views whose latest snapshot some connected proxy has not ACKed yet (convergence.ts). */
  unconverged(): string[];
  /** Ends every open stream with OK and refuses new ones (shutdown). */
  close(): void;
}

type AnyCall = ServerDuplexStream<unknown, unknown>;

const defaultClusterDrainMs = 10_000;

/** The per-type services and the type each serves. */
const perTypeServices: Array<{ definition: ServiceDefinition; typeUrl: string }> = [
  { definition: ListenerDiscoveryServiceService, typeUrl: typeUrls.listener },
  { definition: RouteDiscoveryServiceService, typeUrl: typeUrls.route },
  { definition: ClusterDiscoveryServiceService, typeUrl: typeUrls.cluster },
  { definition: EndpointDiscoveryServiceService, typeUrl: typeUrls.endpoint },
  { definition: SecretDiscoveryServiceService, typeUrl: typeUrls.secret },
];

export function createAdsServer(opts: AdsServerOptions): AdsServer {
  const { cache, logger } = opts;
  const log = logger.child({ category: 'technical', component: 'xds' });
  const metrics = createXdsMetrics(opts.registry, cache);
  const connections = new ConnectionRegistry(logger, metrics);
  const convergence = new ConvergenceTracker(cache, connections, metrics.convergence);
  const classify = opts.classify;
  const identifier = opts.identifier ?? 'sekisho-control-plane';
  const clusterDrainMs = opts.clusterDrainMs ?? defaultClusterDrainMs;
  if (!Number.isFinite(clusterDrainMs) || clusterDrainMs < 0) {
    throw new Error(`clusterDrainMs must be a number of milliseconds >= 0, got ${clusterDrainMs}`);
  }
  const open = new Set<{ end(reason: string): void }>();
  let closed = false;

  function serve<Request extends { node?: Node }>(
    call: AnyCall,
    variant: XdsVariant,
    fixedTypeUrl: string | undefined,
    makeProtocol: (ctx: StreamContext) => StreamProtocol<Request>,
  ): void {
    if (closed) {
      call.on('error', () => {});
      call.emit('error', { code: grpcStatus.UNAVAILABLE, details: 'control plane is shutting down' });
      return;
    }
    // Without views every node reads the default group at once; with them, nothing until the node is known.
    let group: string | undefined = classify ? undefined : defaultGroup;
    let nodeSeen = false;
    /** Types this stream may subscribe to, once authorized (unused without authorization). */
    let allowedTypes: ReadonlySet<string> | undefined;
    /** Asked before anything more is done on the stream, for a grant that can lapse (authorize's). */
    let revalidate: (() => string | undefined) | undefined;
    let ended = false;
    let draining = false;
    let unwatch = () => {};
    const recorder = connections.open({
      peer: call.getPeer(),
      service: fixedTypeUrl ? typeLabel(fixedTypeUrl) : 'ads',
      variant,
      group: group ?? '',
    });

    let wake: NodeJS.Timeout | undefined;
    const cleanup = (reason: string) => {
      if (ended) return;
      ended = true;
      clearTimeout(wake);
      unwatch();
      open.delete(handle);
      recorder.closed(reason);
    };
    const internalError = (error: unknown) => {
      log.error(
        { ...recorder.fields(), event_type: 'xds_internal_error', error_details: String(error) },
        'xDS stream failed; closing it (the client reconnects)',
      );
      ctx.fail(grpcStatus.INTERNAL, 'internal error');
    };
    const guarded = (run: () => void) => {
      try {
        const lapsed = revalidate?.();
        if (lapsed !== undefined && !ended) {
          log.warn(
            { ...recorder.fields(), event_type: 'xds_node_refused', error_details: lapsed },
            'xDS client refused: its certificate no longer allows the view it reads',
          );
          ctx.fail(grpcStatus.PERMISSION_DENIED, lapsed);
          return;
        }
        run();
      } catch (error) {
        internalError(error);
      }
    };
    const watch = () => {
      unwatch();
      unwatch = group === undefined ? () => {} : cache.watch(group, () => guarded(() => protocol.respondAll()));
    };

    const ctx: StreamContext = {
      cache,
      recorder,
      identifier,
      fixedTypeUrl,
      group: () => group,
      writable: () => !draining,
      write: (response) => {
        // grpc-js buffers what the client has not read; past its high-water mark write()
        // returns false. Then nothing more is written until 'drain', and what is sent then
        // is built from the snapshot current at that moment: at most the latest is pending.
        if (!call.write(response)) {
          draining = true;
          call.once('drain', () => {
            draining = false;
            guarded(() => protocol.respondAll());
          });
        }
      },
      clusterDrainMs,
      now: Date.now,
      wakeIn: (ms) => {
        clearTimeout(wake);
        if (ended) return;
        wake = setTimeout(() => guarded(() => protocol.respondAll()), ms);
        wake.unref();
      },
      fail: (code, details) => {
        cleanup(details);
        call.emit('error', { code, details });
      },
      closed: () => ended,
    };
    const protocol = makeProtocol(ctx);
    const handle = {
      end: (reason: string) => {
        cleanup(reason);
        call.end();
      },
    };
    open.add(handle);
    watch();

    call.on('data', (request: Request) =>
      guarded(() => {
        if (ended) return;
        // Envoy sends the node on the first request only (set_node_on_first_message_only).
        if (!nodeSeen && request.node) {
          nodeSeen = true;
          if (classify) {
            group = classify(request.node);
            watch();
          }
          recorder.node(request.node, group, group ?? '');
          if (opts.authorize) {
            const decision = opts.authorize(request.node, group, call.getAuthContext()?.sslPeerCertificate?.raw);
            if (!decision.ok) {
              log.warn(
                {
                  ...recorder.fields(),
                  event_type: 'xds_node_refused',
                  node_cluster: request.node.cluster,
                  identity: decision.identity,
                  error_details: decision.reason,
                },
                'xDS client refused: its certificate does not allow the view its node claims',
              );
              ctx.fail(grpcStatus.PERMISSION_DENIED, decision.reason);
              return;
            }
            allowedTypes = decision.types;
            revalidate = decision.revalidate;
          }
        }
        if (opts.authorize) {
          const typeUrl = fixedTypeUrl ?? (request as { typeUrl?: string }).typeUrl ?? '';
          if (!allowedTypes || (typeUrl !== '' && !allowedTypes.has(typeUrl))) {
            const reason = allowedTypes
              ? `this client's view does not include ${typeUrl}`
              : 'the first request must carry the node';
            log.warn(
              { ...recorder.fields(), event_type: 'xds_type_refused', type_url: typeUrl, error_details: reason },
              'xDS request refused',
            );
            ctx.fail(grpcStatus.PERMISSION_DENIED, reason);
            return;
          }
        }
        protocol.onRequest(request);
      }),
    );
    call.on('end', () => {
      // The client half-closed: it will send nothing more, so finish our side too.
      cleanup('client ended the stream');
      call.end();
    });
    call.on('cancelled', () => cleanup('cancelled'));
    call.on('error', (error: Error) => cleanup(`error: ${error.message}`));
    call.on('close', () => cleanup('closed'));
  }

  const sotw = (fixedTypeUrl?: string) => (call: AnyCall) =>
    serve<DiscoveryRequest>(call, 'sotw', fixedTypeUrl, (ctx) => new SotwProtocol(ctx));
  const delta = (fixedTypeUrl?: string) => (call: AnyCall) =>
    serve<DeltaDiscoveryRequest>(call, 'delta', fixedTypeUrl, (ctx) => new DeltaProtocol(ctx));

  const ads: AggregatedDiscoveryServiceServer = {
    streamAggregatedResources: sotw() as AggregatedDiscoveryServiceServer['streamAggregatedResources'],
    deltaAggregatedResources: delta() as AggregatedDiscoveryServiceServer['deltaAggregatedResources'],
  };

  return {
    register: (server) => {
      server.addService(acceptingEncoded(AggregatedDiscoveryServiceService), ads);
      for (const { definition, typeUrl } of perTypeServices) {
        // Each per-type service has one SotW and one delta streaming method (plus a unary
        // REST-style Fetch method, which Sekisho does not serve: clients stream).
        const implementation: Record<string, unknown> = {};
        for (const [method, spec] of Object.entries(definition)) {
          if (!spec.requestStream) {
            implementation[method] = (_call: unknown, callback: (error: unknown) => void) =>
              callback({ code: grpcStatus.UNIMPLEMENTED, details: 'fetch (REST-style) xDS is not served; stream' });
          } else {
            implementation[method] = method.startsWith('delta') ? delta(typeUrl) : sotw(typeUrl);
          }
        }
        server.addService(acceptingEncoded(definition), implementation as never);
      }
    },
    status: () => connections.list(),
    connections,
    unconverged: () => convergence.unconverged(),
    close: () => {
      closed = true;
      convergence.close();
      for (const handle of [...open]) handle.end('control plane shutting down');
    },
  };
}
