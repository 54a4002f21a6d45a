import { status as grpcStatus } from '@grpc/grpc-js';
import type { DiscoveryRequest, DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { type CachedResource, sortByPushOrder, type TypeSnapshot, versionOf } from './cache';
import { encodeSotwResponse } from './encode';
import {
  clusterUsers,
  clusterUsersCurrent,
  drainRemaining,
  endpointsOwedAfter,
  holdReason,
  type ProgressOf,
  retainedResources,
} from './ordering';
import { byName, type StreamContext, type StreamProtocol, snapshotFor } from './stream';
import { typeUrls, wildcardTypes } from './type-urls';

// The state-of-the-world protocol of Envoy's "xDS REST and gRPC protocol" page, per stream:
// every response carries the type's version and a fresh nonce; only the latest nonce of a
// type counts (anything else is stale and gets no answer); error_detail marks a NACK, after
// which the rejected version is never sent again to this stream. At most one response per
// type is unanswered: the next goes out after the client's answer, built from the snapshot
// current then (so a slow client skips intermediate snapshots instead of queueing them).

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
  awaiting: boolean;
  acked?: { version: string; fingerprint: string };
  /** The snapshot version the client rejected last; never sent again to this stream. */
  rejectedVersion?: string;
}

const namesKeyOf = (names: TypeState['names']) => (names === '*' ? '*' : [...names].sort().join('\n'));

/** What a subscription gets: everything (wildcard) or the requested names that exist. */
function select(snapshot: TypeSnapshot, names: TypeState['names']): CachedResource[] {
  if (names === '*') return [...snapshot.resources.values()];
  return [...names].flatMap((name) => snapshot.resources.get(name) ?? []);
}

export class SotwProtocol implements StreamProtocol<DiscoveryRequest> {
  private readonly types = new Map<string, TypeState>();
  private nonceSeq = 0;
  /** A cluster response went out and no endpoint response followed it yet (ordering.ts). */
  private edsOwed = false;
  /** When listeners or routes were last ACKed: dropped clusters drain from then (ordering.ts). */
  private usersAckedAt: number | undefined;

  constructor(private readonly ctx: StreamContext) {}

  private readonly progressOf: ProgressOf = (typeUrl) => {
    const t = this.types.get(typeUrl);
    if (!t) return undefined;
    const snapshot = snapshotFor(this.ctx, typeUrl);
    return {
      awaiting: t.awaiting,
      rejectsCurrent: t.rejectedVersion !== undefined && t.rejectedVersion === snapshot?.version,
      upToDate: !t.awaiting && snapshot !== undefined && t.acked?.fingerprint === versionOf(select(snapshot, t.names)),
    };
  };

  onRequest(request: DiscoveryRequest): void {
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
      t = { names: '*', awaiting: false };
      this.types.set(typeUrl, t);
    }
    // A nonce is valid only on its stream and only the latest one counts: anything
    // else answers a response that has since been superseded, so it is ignored.
    if (t.sent && request.responseNonce !== t.sent.nonce) {
      this.ctx.recorder.stale(typeUrl, request.responseNonce);
      return;
    }
    if (t.sent && t.awaiting) {
      t.awaiting = false;
      if (request.errorDetail) {
        t.rejectedVersion = t.sent.snapshotVersion;
        this.ctx.recorder.nacked(typeUrl, {
          version: t.sent.version,
          keptVersion: request.versionInfo,
          message: request.errorDetail.message,
        });
      } else {
        t.acked = { version: t.sent.version, fingerprint: t.sent.fingerprint };
        if (clusterUsers.includes(typeUrl)) this.usersAckedAt = this.ctx.now();
        this.ctx.recorder.acked(typeUrl, t.sent.version);
      }
    }
    const names = request.resourceNames;
    t.names =
      wildcardTypes.has(typeUrl) && (names.length === 0 || names.includes('*')) ? '*' : new Set(names.filter(Boolean));
    this.ctx.recorder.subscribed(typeUrl, t.names);
    this.maybeRespond(typeUrl, typeUrl === typeUrls.endpoint);
    // An answer can release what waited for it (routes after clusters, cluster removals after routes).
    this.respondAll();
  }

  respondAll(): void {
    for (const typeUrl of sortByPushOrder(this.types.keys())) {
      if (this.ctx.closed()) return;
      this.maybeRespond(typeUrl);
    }
  }

  /** Sends the type's current state if this subscriber lacks it. `edsRequest`: see edsOwed. */
  private maybeRespond(typeUrl: string, edsRequest = false): void {
    const t = this.types.get(typeUrl);
    if (!t || t.awaiting || this.ctx.closed() || !this.ctx.writable()) return;
    const snapshot = snapshotFor(this.ctx, typeUrl);
    if (!snapshot) return; // no snapshot (or no view) yet: a later snapshot or node answers
    // Parked after a NACK: the rejected version stays unsent until the snapshot moves on.
    if (snapshot.version === t.rejectedVersion) return;
    if (holdReason(typeUrl, this.progressOf)) return;

    const selected = select(snapshot, t.names);
    const drain = drainRemaining(this.usersAckedAt, this.ctx.clusterDrainMs, this.ctx.now());
    const retained = t.sent ? retainedResources(typeUrl, t.sent.resources, snapshot, this.progressOf, drain) : [];
    // Kept only for the drain: look again once it is over.
    if (retained.length > 0 && clusterUsersCurrent(this.progressOf)) this.ctx.wakeIn(drain);
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
          : edsRequest && this.edsOwed
            ? 'after-cds'
            : undefined;
    if (!reason) return;

    this.nonceSeq += 1;
    const nonce = `${this.ctx.recorder.id}-${this.nonceSeq}`;
    // A response that still carries dropped clusters is not the snapshot's version.
    const version = retained.length > 0 ? `${snapshot.version}+retained` : snapshot.version;
    const response: Omit<DiscoveryResponse, 'resources'> = {
      versionInfo: version,
      canary: false,
      typeUrl,
      nonce,
      controlPlane: { identifier: this.ctx.identifier },
    };
    t.sent = { nonce, version, snapshotVersion: snapshot.version, fingerprint, namesKey, resources: selected };
    t.awaiting = true;
    if (endpointsOwedAfter(typeUrl)) this.edsOwed = true;
    if (typeUrl === typeUrls.endpoint) this.edsOwed = false;
    const bytes = encodeSotwResponse(response, selected);
    this.ctx.write(bytes);
    this.ctx.recorder.sent(typeUrl, {
      version,
      nonce,
      resources: selected.length,
      bytes: bytes.length,
      reason,
      retained: retained.map((r) => r.name),
    });
  }
}
