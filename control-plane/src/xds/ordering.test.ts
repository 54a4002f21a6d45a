import { describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import { holdReason, type ProgressOf, retainedResources, type TypeProgress } from './ordering';
import { edsCluster, resourcesOf } from './test-helpers';
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

  it('never retains anything but clusters', () => {
    expect(retainedResources(EDS, sent, snapshot, progress({ [RDS]: stale }))).toEqual([]);
  });
});
