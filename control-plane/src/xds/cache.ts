import { createHash } from 'node:crypto';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import type { ResourcesByType } from './resources';
import { pushOrder } from './type-urls';

// What to send, kept apart from how the protocol sends it (server.ts). Every resource
// is versioned by a hash of its content and every type by a hash over its resources,
// so a new snapshot that changes nothing of a type notifies nobody about that type.

/** The snapshot group of every node when the server classifies no views (tests, a single view). */
export const defaultGroup = 'default';

export interface CachedResource {
  name: string;
  resource: Any;
  /** sha256 (hex) of type URL, name and serialised bytes. */
  hash: string;
}

export interface TypeSnapshot {
  /** Hash over the type's (name, hash) pairs; the version_info of responses. */
  version: string;
  resources: ReadonlyMap<string, CachedResource>;
}

/** Receives the types whose version changed, in push order. */
export type SnapshotListener = (changedTypes: readonly string[]) => void;

/** Orders type URLs the way they must be pushed: pushOrder first, any other type after, by name. */
export function sortByPushOrder(types: Iterable<string>): string[] {
  const rank = (type: string) => {
    const index = (pushOrder as readonly string[]).indexOf(type);
    return index === -1 ? pushOrder.length : index;
  };
  return [...new Set(types)].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** Hash of one resource: the same bytes under the same name and type always give the same hash. */
export function resourceHash(typeUrl: string, name: string, resource: Any): string {
  return createHash('sha256')
    .update(typeUrl)
    .update('\0')
    .update(name)
    .update('\0')
    .update(resource.value)
    .digest('hex');
}

/**
 * Version of a set of resources: independent of their order. Also used by the server
 * for the subset of a type that one subscriber asked for.
 */
export function versionOf(resources: Iterable<CachedResource>): string {
  const hash = createHash('sha256');
  for (const r of [...resources].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    hash.update(r.name).update('\0').update(r.hash).update('\n');
  }
  // 16 hex digits keep version_info readable in logs and config dumps; 64 bits is
  // plenty to tell a handful of successive configurations apart.
  return hash.digest('hex').slice(0, 16);
}

const emptyVersion = versionOf([]);

/** Hashes every resource; throws on a resource packed as another type or a name repeated within a type. */
function buildTypes(resources: ResourcesByType): Map<string, TypeSnapshot> {
  const next = new Map<string, TypeSnapshot>();
  for (const [typeUrl, list] of resources) {
    const byName = new Map<string, CachedResource>();
    for (const { name, resource } of list) {
      if (resource.typeUrl !== typeUrl) {
        throw new Error(`resource ${name} of type ${typeUrl} is packed as ${resource.typeUrl}`);
      }
      if (byName.has(name)) throw new Error(`resource name ${name} appears twice in ${typeUrl}`);
      byName.set(name, { name, resource, hash: resourceHash(typeUrl, name, resource) });
    }
    next.set(typeUrl, { version: versionOf(byName.values()), resources: byName });
  }
  return next;
}

interface GroupState {
  types: Map<string, TypeSnapshot>;
  setAt: Date;
}

export class SnapshotCache {
  private readonly groups = new Map<string, GroupState>();
  private readonly listeners = new Map<string, Set<SnapshotListener>>();
  private readonly allListeners = new Set<(group: string, changedTypes: readonly string[]) => void>();

  /**
   * Replaces the group's snapshot with `resources` (the complete set of every type)
   * and notifies the group's listeners of the types whose version changed. Returns
   * those types in push order. Throws, changing nothing, when a resource's packed
   * type does not match its type or a name repeats within a type.
   */
  setSnapshot(resources: ResourcesByType, group: string = defaultGroup): string[] {
    return this.setSnapshots(new Map([[group, resources]]))[group] ?? [];
  }

  /**
   * setSnapshot for several groups (views) at once: every group is checked before any is
   * replaced, so a refused resource leaves all of them on the previous definition. Returns
   * each group's changed types.
   */
  setSnapshots(byGroup: ReadonlyMap<string, ResourcesByType>): Record<string, string[]> {
    const built = [...byGroup].map(([group, resources]) => [group, buildTypes(resources)] as const);
    const changedByGroup: Record<string, string[]> = {};
    for (const [group, next] of built) {
      const previous = this.groups.get(group);
      const changed: string[] = [];
      for (const typeUrl of new Set([...next.keys(), ...(previous?.types.keys() ?? [])])) {
        const before = previous?.types.get(typeUrl)?.version;
        const after = next.get(typeUrl)?.version ?? emptyVersion;
        if (before === undefined ? next.has(typeUrl) : before !== after) changed.push(typeUrl);
      }
      this.groups.set(group, { types: next, setAt: new Date() });
      const ordered = sortByPushOrder(changed);
      changedByGroup[group] = ordered;
      if (ordered.length > 0 || !previous) {
        for (const listener of [...(this.listeners.get(group) ?? [])]) listener(ordered);
        for (const listener of [...this.allListeners]) listener(group, ordered);
      }
    }
    return changedByGroup;
  }

  /**
   * The type's current resources and version in the group's snapshot, or undefined
   * while the group has no snapshot yet. A type the snapshot lacks is empty.
   */
  get(typeUrl: string, group: string = defaultGroup): TypeSnapshot | undefined {
    const state = this.groups.get(group);
    if (!state) return undefined;
    return state.types.get(typeUrl) ?? { version: emptyVersion, resources: new Map() };
  }

  hasSnapshot(group: string = defaultGroup): boolean {
    return this.groups.has(group);
  }

  /** Type URL → version of the group's snapshot, in push order. */
  versions(group: string = defaultGroup): Record<string, string> {
    const state = this.groups.get(group);
    if (!state) return {};
    return Object.fromEntries(sortByPushOrder(state.types.keys()).map((t) => [t, state.types.get(t)?.version ?? '']));
  }

  groupNames(): string[] {
    return [...this.groups.keys()].sort();
  }

  /** watch() for every group: `listener` gets the group too. Returns the unsubscribe. */
  watchAll(listener: (group: string, changedTypes: readonly string[]) => void): () => void {
    this.allListeners.add(listener);
    return () => this.allListeners.delete(listener);
  }

  /** Calls `listener` after every setSnapshot of `group` that changed something. Returns the unsubscribe. */
  watch(group: string, listener: SnapshotListener): () => void {
    let set = this.listeners.get(group);
    if (!set) {
      set = new Set();
      this.listeners.set(group, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(group);
    };
  }
}
