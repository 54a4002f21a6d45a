import type { Histogram } from 'prom-client';
import { type CachedResource, type SnapshotCache, type TypeSnapshot, versionOf } from './cache';
import type { ConnectionEvent, Connections } from './connections';

// Convergence: how long a new snapshot of a view takes to be applied by every proxy connected
// to the view. When a view's snapshot changes, the tracker notes each connected stream of the
// view and each type it subscribes to whose content changed *for that subscription* (a by-name
// subscriber whose resources did not change is sent nothing, so nothing is awaited from it).
// It observes `sekisho_xds_convergence_seconds{view}` once all of them have ACKed the new
// version (a `+retained` version, still carrying a dropped cluster, is not yet the new one). A
// stream that closes is no longer waited for; one that NACKs keeps the change unconverged until
// the next snapshot of the view replaces it (unobserved: that version never converged).

interface Pending {
  startedAt: bigint;
  /** `${stream}\0${typeUrl}` → the version that stream must ACK. */
  awaited: Map<string, string>;
}

const key = (stream: number, typeUrl: string) => `${stream}\0${typeUrl}`;

function subsetVersion(snapshot: TypeSnapshot | undefined, names: readonly string[]): string {
  const selected: CachedResource[] = [];
  for (const name of names) {
    const resource = snapshot?.resources.get(name);
    if (resource) selected.push(resource);
  }
  return versionOf(selected);
}

export class ConvergenceTracker {
  /** Each view's snapshot as last seen, to tell what changed for a by-name subscription. */
  private readonly seen = new Map<string, Map<string, TypeSnapshot>>();
  private readonly pending = new Map<string, Pending>();
  private readonly unsubscribe: Array<() => void>;

  constructor(
    private readonly cache: SnapshotCache,
    private readonly connections: Connections & { onEvent(listener: (event: ConnectionEvent) => void): () => void },
    private readonly histogram: Histogram<'view'>,
  ) {
    for (const group of cache.groupNames()) this.seen.set(group, this.snapshotOf(group));
    this.unsubscribe = [
      cache.watchAll((group, changed) => this.changed(group, changed)),
      connections.onEvent((event) => this.event(event)),
    ];
  }

  close(): void {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    this.pending.clear();
  }

  /** Views whose latest change some connected proxy has not ACKed yet (for tests and status). */
  unconverged(): string[] {
    return [...this.pending.keys()].sort();
  }

  private snapshotOf(group: string): Map<string, TypeSnapshot> {
    const types = new Map<string, TypeSnapshot>();
    for (const typeUrl of Object.keys(this.cache.versions(group))) {
      const snapshot = this.cache.get(typeUrl, group);
      if (snapshot) types.set(typeUrl, snapshot);
    }
    return types;
  }

  private changed(group: string, changedTypes: readonly string[]): void {
    const before = this.seen.get(group);
    const after = this.snapshotOf(group);
    this.seen.set(group, after);
    this.pending.delete(group); // a newer snapshot: the previous change can no longer converge
    const awaited = new Map<string, string>();
    for (const stream of this.connections.list()) {
      if (!stream.known || stream.group !== group) continue;
      for (const typeUrl of changedTypes) {
        const status = stream.types[typeUrl];
        const next = after.get(typeUrl) ?? this.cache.get(typeUrl, group);
        if (!status || !next || status.ackedVersion === next.version) continue;
        if (status.subscribed !== '*') {
          if (status.subscribed.length === 0) continue;
          const previous = before?.get(typeUrl);
          if (previous && subsetVersion(previous, status.subscribed) === subsetVersion(next, status.subscribed))
            continue;
        }
        awaited.set(key(stream.stream, typeUrl), next.version);
      }
    }
    // No connected proxy of the view: nothing to converge, nothing observed.
    if (awaited.size > 0) this.pending.set(group, { startedAt: process.hrtime.bigint(), awaited });
  }

  private event(event: ConnectionEvent): void {
    for (const [group, pending] of this.pending) {
      if (event.kind === 'acked') {
        const id = key(event.stream, event.typeUrl);
        if (pending.awaited.get(id) === event.version) pending.awaited.delete(id);
      } else {
        const prefix = `${event.stream}\0`;
        for (const id of [...pending.awaited.keys()]) if (id.startsWith(prefix)) pending.awaited.delete(id);
      }
      if (pending.awaited.size === 0) {
        this.pending.delete(group);
        // A change whose every proxy disconnected did not converge: only ACKs end one.
        if (event.kind === 'acked') {
          this.histogram.observe({ view: group }, Number(process.hrtime.bigint() - pending.startedAt) / 1e9);
        }
      }
    }
  }
}
