import { describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import {
  drainRemaining,
  heldRemovals,
  holdReason,
  type ProgressOf,
  retainedResources,
  type TypeProgress,
} from './ordering';
import { edsCluster, loadAssignment, resourcesOf } from './test-helpers';
import { typeUrls } from './type-urls';

const { cluster: CDS, endpoint: EDS, secret: SDS, listener: LDS, route: RDS } = typeUrls;
const settled: TypeProgress = { awaiting: false, rejectsCurrent: false, upToDate: true };
const awaiting: TypeProgress = { ...settled, awaiting: true, upToDate: false };
const rejecting: TypeProgress = { ...settled, rejectsCurrent: true, upToDate: false };
const stale: TypeProgress = { ...settled, upToDate: false };
const progress =
  (of: Partial<Record<string, TypeProgress>>): ProgressOf =>
  (type) =>
    of[type];

describe('make before break: may a type go out now?', () => {
  it.each([
    ['routes, nothing else subscribed', RDS, {}, undefined],
    ['routes while clusters are unanswered', RDS, { [CDS]: awaiting }, 'clusters unsettled'],
    ['routes while the client rejects the current clusters', RDS, { [CDS]: rejecting }, 'clusters unsettled'],
    ['routes while endpoints are unanswered', RDS, { [CDS]: settled, [EDS]: awaiting }, 'endpoints unsettled'],
    ['listeners while endpoints are rejected', LDS, { [EDS]: rejecting }, 'endpoints unsettled'],
    ['listeners while secrets are unanswered', LDS, { [SDS]: awaiting }, 'secrets unsettled'],
    ['routes while secrets are unanswered (routes name no secret)', RDS, { [SDS]: awaiting }, undefined],
    ['clusters while routes are unanswered (never held)', CDS, { [RDS]: awaiting, [LDS]: awaiting }, undefined],
    [
      'endpoints while clusters are unanswered (Envoy asks for them before it ACKs)',
      EDS,
      { [CDS]: awaiting },
      undefined,
    ],
    ['listeners once everything settled', LDS, { [CDS]: settled, [EDS]: settled, [SDS]: settled }, undefined],
  ])('%s', (_what, type, of, reason) => {
    expect(holdReason(type, progress(of))).toBe(reason);
  });
});

describe('make before break: dropped clusters', () => {
  const cache = new SnapshotCache();
  cache.setSnapshot(resourcesOf(edsCluster('new')));
  const snapshot = cache.get(CDS);
  if (!snapshot) throw new Error('no snapshot');
  const sent = [{ name: 'old' }, { name: 'new' }];

  it.each([
    ['kept while the routes are not the current ones', { [LDS]: settled, [RDS]: stale }, ['old']],
    ['kept while the listeners are unanswered', { [LDS]: awaiting, [RDS]: settled }, ['old']],
    ['removed once listeners and routes are current', { [LDS]: settled, [RDS]: settled }, []],
    ['removed when the stream takes no listeners or routes', {}, []],
  ])('%s', (_what, of, kept) => {
    expect(retainedResources(CDS, sent, snapshot, progress(of)).map((r) => r.name)).toEqual(kept);
  });

  it('kept for the drain after listeners and routes became current, removed once it is over', () => {
    const current = progress({ [LDS]: settled, [RDS]: settled });
    expect(retainedResources(CDS, sent, snapshot, current, 1).map((r) => r.name)).toEqual(['old']);
    expect(retainedResources(CDS, sent, snapshot, current, 0)).toEqual([]);
  });

  it.each([
    ['no listener or route ACKed yet: nothing to drain', undefined, 10_000, 0],
    ['just ACKed: the whole drain', 5_000, 5_000, 10_000],
    ['part way', 5_000, 9_000, 6_000],
    ['over', 5_000, 20_000, 0],
  ])('drain remaining: %s', (_what, ackedAt, now, remaining) => {
    expect(drainRemaining(ackedAt, 10_000, now)).toBe(remaining);
  });

  it('never retains anything but clusters', () => {
    expect(retainedResources(EDS, sent, snapshot, progress({ [RDS]: stale }))).toEqual([]);
  });
});

describe('make before break: removals a delta stream is told of', () => {
  const cache = new SnapshotCache();
  cache.setSnapshot(resourcesOf(edsCluster('new'), loadAssignment('new', [{ host: '127.0.0.1', port: 9001 }])));
  const snapshotOf = (type: string) => {
    const snapshot = cache.get(type);
    if (!snapshot) throw new Error(`no snapshot of ${type}`);
    return snapshot;
  };
  const held = ['old', 'new'];

  it.each([
    ['a dropped cluster while the routes are not the current ones', CDS, { [RDS]: stale }, ['old']],
    ['a dropped cluster once listeners and routes are current', CDS, { [LDS]: settled, [RDS]: settled }, []],
    ['its endpoints while the routes are not the current ones', EDS, { [CDS]: stale, [RDS]: stale }, ['old']],
    // The routes moved; the cluster's removal is out but unanswered: its endpoints stay.
    ['its endpoints until the cluster removal is ACKed', EDS, { [CDS]: awaiting, [RDS]: settled }, ['old']],
    ['its endpoints once clusters, listeners and routes are current', EDS, { [CDS]: settled, [RDS]: settled }, []],
    ['nothing of any other type', RDS, { [CDS]: stale, [RDS]: stale }, []],
  ])('%s', (_what, type, of, kept) => {
    expect(heldRemovals(type, held, snapshotOf(type === RDS ? CDS : type), progress(of))).toEqual(kept);
  });
});
