import type { TypeSnapshot } from './cache';
import { typeUrls } from './type-urls';

// The make-before-break policy, apart from the protocol that carries it (sotw.ts, delta.ts):
// pure decisions over what a stream has of each type. Both protocols ask the same questions
// (may this type go out now? must a dropped cluster still be served?), so Envoy sees the same
// order whichever variant it speaks.

/** What one stream has of one type, as far as ordering cares. */
export interface TypeProgress {
  /** A response is out and the client has not answered it (ACK or NACK) yet. */
  awaiting: boolean;
  /** The client rejected the snapshot version this type is at now. */
  rejectsCurrent: boolean;
  /** The client ACKed exactly what it should have of this type now. */
  upToDate: boolean;
}

/** Progress of a type on the stream, or undefined when the stream does not subscribe to it. */
export type ProgressOf = (typeUrl: string) => TypeProgress | undefined;

/** Types whose resources name clusters: routes, and listeners through their filters. */
export const clusterUsers: readonly string[] = [typeUrls.listener, typeUrls.route];

const unsettled = (progress: TypeProgress | undefined) =>
  progress !== undefined && (progress.awaiting || progress.rejectsCurrent);

/**
 * Why `typeUrl` must wait before the stream gets a new response of it, or undefined when it
 * may go now. Listeners and routes wait until no cluster or endpoint response is unanswered or
 * rejected (a route must not name a cluster Envoy lacks or still warms; Envoy asks for a new
 * cluster's endpoints before it ACKs the clusters), and a listener also waits for the TLS
 * secrets it may name (a rotated certificate goes out before a listener change of the same
 * snapshot).
 */
export function holdReason(typeUrl: string, progressOf: ProgressOf): string | undefined {
  if (clusterUsers.includes(typeUrl)) {
    if (unsettled(progressOf(typeUrls.cluster))) return 'clusters unsettled';
    if (unsettled(progressOf(typeUrls.endpoint))) return 'endpoints unsettled';
  }
  if (typeUrl === typeUrls.listener && unsettled(progressOf(typeUrls.secret))) return 'secrets unsettled';
  return undefined;
}

/**
 * Clusters the snapshot dropped that the stream must still be served: those it was sent
 * before, while its listeners and routes are not yet the current ones (requests on the old
 * routes still find their cluster), and for `drainRemainingMs` after they became current:
 * a request that matched an old route before the new routes arrived sits in ext_authz and
 * the rate-limit filter first, and Envoy's router looks its cluster up by name only after
 * them (a cluster removed meanwhile answers 503 "no cluster"). Empty for every other type.
 */
export function retainedResources<R extends { name: string }>(
  typeUrl: string,
  previouslySent: Iterable<R>,
  snapshot: TypeSnapshot,
  progressOf: ProgressOf,
  drainRemainingMs = 0,
): R[] {
  if (typeUrl !== typeUrls.cluster) return [];
  if (clusterUsersCurrent(progressOf) && drainRemainingMs <= 0) return [];
  return [...previouslySent].filter((r) => !snapshot.resources.has(r.name));
}

/** The stream's listeners and routes are the current ones (or it takes none). */
export const clusterUsersCurrent = (progressOf: ProgressOf): boolean =>
  clusterUsers.every((type) => progressOf(type)?.upToDate ?? true);

/**
 * How long dropped clusters are still owed to requests in flight, `usersAckedAt` being when
 * the stream last ACKed listeners or routes (undefined: never, nothing to drain).
 */
export function drainRemaining(usersAckedAt: number | undefined, drainMs: number, now: number): number {
  return usersAckedAt === undefined ? 0 : Math.max(0, usersAckedAt + drainMs - now);
}

/**
 * Names a delta stream holds that the snapshot dropped but must not be told are removed yet:
 * dropped clusters as retainedResources says, and the endpoints of dropped clusters until
 * the clusters' removal is ACKed too. A delta removal of a ClusterLoadAssignment empties the
 * cluster it belongs to, so a retained cluster would answer the old routes' requests with 503
 * (state of the world never removes endpoints by leaving them out, so needs no such rule).
 */
export function heldRemovals(
  typeUrl: string,
  held: Iterable<string>,
  snapshot: TypeSnapshot,
  progressOf: ProgressOf,
  drainRemainingMs = 0,
): string[] {
  const dropped = [...held].filter((name) => !snapshot.resources.has(name));
  if (typeUrl === typeUrls.cluster) {
    return retainedResources(
      typeUrl,
      dropped.map((name) => ({ name })),
      snapshot,
      progressOf,
      drainRemainingMs,
    ).map((r) => r.name);
  }
  if (typeUrl !== typeUrls.endpoint) return [];
  const settled = (progressOf(typeUrls.cluster)?.upToDate ?? true) && clusterUsersCurrent(progressOf);
  return settled ? [] : dropped;
}

/**
 * Envoy keeps an updated cluster warming until an endpoint response arrives after it, even
 * when the endpoints did not change (go-control-plane#245, envoy#13009): after every cluster
 * response, the endpoints are owed once more.
 */
export const endpointsOwedAfter = (typeUrl: string): boolean => typeUrl === typeUrls.cluster;
