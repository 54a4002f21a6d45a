import { status as grpcStatus } from '@grpc/grpc-js';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
} from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { type CachedResource, sortByPushOrder, type TypeSnapshot } from './cache';
import { encodeDeltaResponse } from './encode';
import {
  clusterUsers,
  clusterUsersCurrent,
  drainRemaining,
  endpointsOwedAfter,
  heldRemovals,
  holdReason,
  type ProgressOf,
} from './ordering';
import { byName, type StreamContext, type StreamProtocol, snapshotFor } from './stream';
import { typeUrls, wildcardTypes } from './type-urls';

// Incremental (delta) xDS, per stream: the client says which names it subscribes to and, on
// reconnect, which versions it already has (initial_resource_versions); each response carries
// only the resources whose version differs from what the client has, and removed_resources
// for those it has that are gone. Every resource's version is its content hash, so a
// reconnect to any replica with the same input sends nothing that did not change.
// Nonces, ACK/NACK and the one-unanswered-response rule are the same as in sotw.ts, and so is
// the ordering (ordering.ts): the two variants differ only in what a response contains.

/** A resource's version in delta responses: its content hash (the cache's sha256), shortened. */
export const resourceVersion = (r: CachedResource): string => r.hash.slice(0, 16);

interface Pending {
  nonce: string;
  /** The snapshot version the response was built from. */
  snapshotVersion: string;
  systemVersion: string;
  /** What the client holds once it ACKs. */
  after: Map<string, string>;
}

interface TypeState {
  wildcard: boolean;
  names: Set<string>;
  /** name → version the client holds: what it ACKed, or announced in initial_resource_versions. */
  known: Map<string, string>;
  pending?: Pending;
  /** The snapshot version the client rejected last; never sent again to this stream. */
  rejectedVersion?: string;
  /** Names to send even when the client holds their version (endpoints after a cluster update). */
  owed: Set<string>;
  /** No response of this type went out on this stream yet: the first is sent even when empty. */
  fresh: boolean;
}

export class DeltaProtocol implements StreamProtocol<DeltaDiscoveryRequest> {
  private readonly types = new Map<string, TypeState>();
  private nonceSeq = 0;
  /** When listeners or routes were last ACKed: dropped clusters drain from then (ordering.ts). */
  private usersAckedAt: number | undefined;

  constructor(private readonly ctx: StreamContext) {}

  /** The resources the subscription covers in the snapshot. */
  private target(t: TypeState, snapshot: TypeSnapshot): Map<string, CachedResource> {
    if (t.wildcard) return new Map(snapshot.resources);
    const out = new Map<string, CachedResource>();
    for (const name of t.names) {
      const r = snapshot.resources.get(name);
      if (r) out.set(name, r);
    }
    return out;
  }

  private readonly progressOf: ProgressOf = (typeUrl) => {
    const t = this.types.get(typeUrl);
    if (!t) return undefined;
    const snapshot = snapshotFor(this.ctx, typeUrl);
    const awaiting = t.pending !== undefined;
    let upToDate = !awaiting && snapshot !== undefined;
    if (upToDate && snapshot) {
      const target = this.target(t, snapshot);
      upToDate =
        target.size === t.known.size && [...target.values()].every((r) => t.known.get(r.name) === resourceVersion(r));
    }
    return {
      awaiting,
      rejectsCurrent: t.rejectedVersion !== undefined && t.rejectedVersion === snapshot?.version,
      upToDate,
    };
  };

  onRequest(request: DeltaDiscoveryRequest): void {
    const typeUrl = request.typeUrl || this.ctx.fixedTypeUrl;
    if (!typeUrl) {
      this.ctx.fail(grpcStatus.INVALID_ARGUMENT, 'type_url is required on an aggregated (ADS) stream');
      return;
    }
    if (this.ctx.fixedTypeUrl && typeUrl !== this.ctx.fixedTypeUrl) {
      this.ctx.fail(grpcStatus.INVALID_ARGUMENT, `this service serves ${this.ctx.fixedTypeUrl} only, not ${typeUrl}`);
      return;
    }
    let t = this.types.get(typeUrl);
    if (!t) {
      // The first request of a type: an empty subscribe list is the legacy wildcard, and
      // initial_resource_versions says what a reconnecting client still holds.
      t = {
        wildcard: wildcardTypes.has(typeUrl) && request.resourceNamesSubscribe.length === 0,
        names: new Set(),
        known: new Map(Object.entries(request.initialResourceVersions)),
        owed: new Set(),
        fresh: true,
      };
      this.types.set(typeUrl, t);
    }

    if (request.responseNonce) {
      if (t.pending && request.responseNonce === t.pending.nonce) {
        const pending = t.pending;
        t.pending = undefined;
        if (request.errorDetail) {
          t.rejectedVersion = pending.snapshotVersion;
          this.ctx.recorder.nacked(typeUrl, {
            version: pending.systemVersion,
            keptVersion: '',
            message: request.errorDetail.message,
          });
        } else {
          t.known = pending.after;
          if (clusterUsers.includes(typeUrl)) this.usersAckedAt = this.ctx.now();
          this.ctx.recorder.acked(typeUrl, pending.systemVersion);
        }
      } else {
        // Stale: it answers a superseded response. Its subscription changes still count.
        this.ctx.recorder.stale(typeUrl, request.responseNonce);
      }
    }

    for (const name of request.resourceNamesSubscribe) {
      if (name === '*') t.wildcard = wildcardTypes.has(typeUrl);
      else if (name) t.names.add(name);
    }
    for (const name of request.resourceNamesUnsubscribe) {
      if (name === '*') {
        t.wildcard = false;
        continue;
      }
      t.names.delete(name);
      // The client forgets what it unsubscribed from; a later subscribe gets it afresh.
      if (!t.wildcard) {
        t.known.delete(name);
        t.pending?.after.delete(name);
      }
    }
    this.ctx.recorder.subscribed(typeUrl, t.wildcard ? '*' : t.names);
    this.respondAll();
  }

  respondAll(): void {
    for (const typeUrl of sortByPushOrder(this.types.keys())) {
      if (this.ctx.closed()) return;
      this.maybeRespond(typeUrl);
    }
  }

  private maybeRespond(typeUrl: string): void {
    const t = this.types.get(typeUrl);
    if (!t || t.pending || this.ctx.closed() || !this.ctx.writable()) return;
    const snapshot = snapshotFor(this.ctx, typeUrl);
    if (!snapshot) return;
    if (snapshot.version === t.rejectedVersion) return;
    if (holdReason(typeUrl, this.progressOf)) return;

    const target = this.target(t, snapshot);
    // A dropped cluster the client holds stays (is not removed) while its listeners and
    // routes are not the current ones, and so do its endpoints until the cluster is gone.
    const drain = drainRemaining(this.usersAckedAt, this.ctx.clusterDrainMs, this.ctx.now());
    const retained = new Set(heldRemovals(typeUrl, t.known.keys(), snapshot, this.progressOf, drain));
    // Kept only for the drain: look again once it is over.
    if (typeUrl === typeUrls.cluster && retained.size > 0 && clusterUsersCurrent(this.progressOf)) {
      this.ctx.wakeIn(drain);
    }
    const changed = [...target.values()]
      .filter((r) => t.known.get(r.name) !== resourceVersion(r) || t.owed.has(r.name))
      .sort(byName);
    const removed = [...t.known.keys()].filter((name) => !target.has(name) && !retained.has(name)).sort();
    if (changed.length === 0 && removed.length === 0 && !t.fresh) {
      t.owed.clear();
      return;
    }

    this.nonceSeq += 1;
    const nonce = `${this.ctx.recorder.id}-${this.nonceSeq}`;
    // Kept clusters make a response other than the snapshot's version. Endpoints held for them
    // do not: the client drops them when it unsubscribes on the cluster's removal, and no later
    // response would then tell it the snapshot's version.
    const systemVersion =
      retained.size > 0 && typeUrl !== typeUrls.endpoint ? `${snapshot.version}+retained` : snapshot.version;
    const after = new Map(t.known);
    for (const r of changed) after.set(r.name, resourceVersion(r));
    for (const name of removed) after.delete(name);
    const response: Omit<DeltaDiscoveryResponse, 'resources'> = {
      systemVersionInfo: systemVersion,
      typeUrl,
      removedResources: removed,
      removedResourceNames: [],
      nonce,
      controlPlane: { identifier: this.ctx.identifier },
    };
    const reason = t.fresh ? 'initial' : changed.some((r) => t.owed.has(r.name)) ? 'after-cds' : 'changed';
    t.pending = { nonce, snapshotVersion: snapshot.version, systemVersion, after };
    t.fresh = false;
    t.owed.clear();
    if (endpointsOwedAfter(typeUrl)) {
      // Envoy keeps an updated cluster warming until its endpoints arrive after it.
      const eds = this.types.get(typeUrls.endpoint);
      if (eds) for (const r of changed) eds.owed.add(r.name);
    }
    const bytes = encodeDeltaResponse(
      response,
      changed.map((r) => ({ resource: r, version: resourceVersion(r) })),
    );
    this.ctx.write(bytes);
    this.ctx.recorder.sent(typeUrl, {
      version: systemVersion,
      nonce,
      resources: changed.length,
      bytes: bytes.length,
      removed: removed.length,
      reason,
      retained: [...retained],
    });
  }
}
