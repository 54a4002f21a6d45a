import type { status as grpcStatus } from '@grpc/grpc-js';
import type { CachedResource, SnapshotCache, TypeSnapshot } from './cache';
import type { ConnectionRecorder } from './connections';

// What a protocol (sotw.ts, delta.ts) needs of the stream it runs on. The server
// (server.ts) owns the gRPC call, the node's classification and the cache watch; the
// protocol owns nonces, versions and ACK/NACK, and asks ordering.ts what may go out.

export interface StreamContext {
  readonly cache: SnapshotCache;
  readonly recorder: ConnectionRecorder;
  /** Reported to clients in control_plane.identifier. */
  readonly identifier: string;
  /** The type a per-type service serves (requests may omit type_url there); undefined on ADS. */
  readonly fixedTypeUrl?: string;
  /** The snapshot group the node reads; undefined while the node is unknown or matched no view. */
  group(): string | undefined;
  /**
   * Whether a response may be written now. False while the client reads slowly (the
   * transport's buffer is full): nothing is queued meanwhile, and once it drains the
   * protocol is asked again and builds its responses from the snapshot current then.
   */
  writable(): boolean;
  write(response: unknown): void;
  /** How long a dropped cluster stays after the routes stopped naming it (ordering.ts). */
  readonly clusterDrainMs: number;
  /** The clock, in ms. */
  now(): number;
  /** Asks for respondAll again in `ms` (a later call replaces an earlier one); cleared when the stream ends. */
  wakeIn(ms: number): void;
  fail(code: grpcStatus, details: string): void;
  closed(): boolean;
}

export interface StreamProtocol<Request> {
  onRequest(request: Request): void;
  /** Sends everything the stream is owed now, in push order (after a snapshot change, a drain, a node). */
  respondAll(): void;
}

/** The type's snapshot in the stream's group, or undefined (no group or no snapshot yet). */
export function snapshotFor(ctx: StreamContext, typeUrl: string): TypeSnapshot | undefined {
  const group = ctx.group();
  return group === undefined ? undefined : ctx.cache.get(typeUrl, group);
}

export const byName = (a: CachedResource, b: CachedResource) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
