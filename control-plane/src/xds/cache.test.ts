import { describe, expect, it } from 'vitest';
import { SnapshotCache, sortByPushOrder } from './cache';
import type { Resource } from './resources';
import { edsCluster, httpListener, loadAssignment, resourcesOf, routeTo } from './test-helpers';
import { typeUrls } from './type-urls';

const { cluster: CDS, endpoint: EDS, listener: LDS, route: RDS, authzPolicy, rateLimitPolicy } = typeUrls;
const ep = (port: number) => [{ host: '127.0.0.1', port }];
const base: Resource[] = [edsCluster('a'), loadAssignment('a', ep(1)), httpListener('l', 8080, 'r'), routeTo('r', 'a')];

describe('SnapshotCache', () => {
  it.each([
    { case: 'identical resources', next: base, changed: [] },
    { case: 'same resources in another order', next: [...base].reverse(), changed: [] },
    {
      case: 'one endpoint changed',
      next: [...base.slice(0, 1), loadAssignment('a', ep(2)), ...base.slice(2)],
      changed: [EDS],
    },
    {
      case: 'route and cluster changed: push order',
      next: [routeTo('r', 'a', 'v2'), edsCluster('a', 5_000), ...base.slice(1, 3)],
      changed: [CDS, RDS],
    },
    { case: 'a listener added', next: [...base, httpListener('l2', 8081, 'r')], changed: [LDS] },
    { case: 'every route removed (type gone)', next: base.slice(0, 3), changed: [RDS] },
  ])('notifies only the types whose version changed: $case', ({ next, changed }) => {
    const cache = new SnapshotCache();
    cache.setSnapshot(resourcesOf(...base));
    const heard: (readonly string[])[] = [];
    cache.watch('default', (types) => heard.push(types));
    expect(cache.setSnapshot(resourcesOf(...next))).toEqual(changed);
    expect(heard).toEqual(changed.length > 0 ? [changed] : []);
  });

  it('versions a type by content: the same content gives the same version in a fresh cache', () => {
    const one = new SnapshotCache();
    const two = new SnapshotCache();
    one.setSnapshot(resourcesOf(...base));
    two.setSnapshot(resourcesOf(...[...base].reverse()));
    expect(one.versions()).toEqual(two.versions());
    expect(Object.keys(one.versions())).toEqual([CDS, EDS, LDS, RDS]);
    expect(one.get(CDS)?.resources.get('a')?.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('reports every type of the first snapshot as changed, and notifies even an empty first snapshot', () => {
    const cache = new SnapshotCache();
    const heard: (readonly string[])[] = [];
    cache.watch('default', (types) => heard.push(types));
    expect(cache.get(CDS)).toBeUndefined();
    cache.setSnapshot(new Map());
    expect(heard).toEqual([[]]);
    expect(cache.get(CDS)).toMatchObject({ resources: new Map() });
    expect(cache.setSnapshot(resourcesOf(...base))).toEqual([CDS, EDS, LDS, RDS]);
  });

  it('keeps groups apart', () => {
    const cache = new SnapshotCache();
    const heard: string[] = [];
    cache.watch('sidecar-customer', () => heard.push('sidecar'));
    cache.setSnapshot(resourcesOf(...base));
    expect(heard).toEqual([]);
    expect(cache.hasSnapshot('sidecar-customer')).toBe(false);
    cache.setSnapshot(resourcesOf(edsCluster('local')), 'sidecar-customer');
    expect(heard).toEqual(['sidecar']);
    expect([...(cache.get(CDS, 'sidecar-customer')?.resources.keys() ?? [])]).toEqual(['local']);
    expect([...(cache.get(CDS)?.resources.keys() ?? [])]).toEqual(['a']);
    expect(cache.groupNames()).toEqual(['default', 'sidecar-customer']);
  });

  it.each([
    { case: 'a repeated name', resources: resourcesOf(edsCluster('a'), edsCluster('a')), error: /appears twice/ },
    {
      case: 'a resource packed as another type',
      resources: new Map([[CDS, [loadAssignment('a', ep(1))]]]),
      error: /is packed as/,
    },
  ])('refuses $case and keeps the previous snapshot', ({ resources, error }) => {
    const cache = new SnapshotCache();
    cache.setSnapshot(resourcesOf(...base));
    const before = cache.versions();
    expect(() => cache.setSnapshot(resources)).toThrow(error);
    expect(cache.versions()).toEqual(before);
  });

  it('stops notifying after unsubscribe', () => {
    const cache = new SnapshotCache();
    let calls = 0;
    const unwatch = cache.watch('default', () => calls++);
    cache.setSnapshot(resourcesOf(...base));
    unwatch();
    cache.setSnapshot(resourcesOf(edsCluster('b')));
    expect(calls).toBe(1);
  });

  it('orders types for pushing: CDS, EDS, LDS, RDS, policies, then unknown types by name', () => {
    expect(sortByPushOrder(['z.Unknown', rateLimitPolicy, RDS, 'a.Unknown', LDS, authzPolicy, EDS, CDS])).toEqual([
      CDS,
      EDS,
      LDS,
      RDS,
      authzPolicy,
      rateLimitPolicy,
      'a.Unknown',
      'z.Unknown',
    ]);
  });
});
