import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileDefinition } from '../definition/load';
import { SnapshotCache } from './cache';
import { resourceVersion } from './delta';
import { testDefinitionYaml } from './test-helpers';
import { typeUrls } from './type-urls';
import { createViews, envoyTypes, gatewayViews } from './views';

const views = createViews(gatewayViews());
const node = (fields: Partial<Node>) => Node.fromPartial(fields);

function compiled(yaml: string) {
  const result = compileDefinition(parse(yaml));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result;
}

describe('views: classifying nodes', () => {
  it.each([
    ['the ingress Envoy by its cluster', { id: 'ingress-7', cluster: 'sekisho-ingress' }, 'ingress'],
    [
      'ext-authz by its metadata',
      { id: 'ext-authz-2', cluster: 'sekisho', metadata: { 'sekisho.view': 'ext-authz' } },
      'ext-authz',
    ],
    [
      'the rate-limit service by its metadata',
      { id: 'r', cluster: 'sekisho', metadata: { 'sekisho.view': 'ratelimit' } },
      'ratelimit',
    ],
    [
      'a node naming a view by metadata over its cluster',
      { cluster: 'sekisho-ingress', metadata: { 'sekisho.view': 'ratelimit' } },
      'ratelimit',
    ],
    ['a node of another cluster: none', { id: 'x', cluster: 'somewhere-else' }, undefined],
    [
      'a node naming an unknown view: none, never a guess',
      { cluster: 'sekisho-ingress', metadata: { 'sekisho.view': 'sidecar:nope' } },
      undefined,
    ],
    [
      'a node whose view metadata is not a string: none',
      { cluster: 'sekisho-ingress', metadata: { 'sekisho.view': 3 } },
      undefined,
    ],
    ['a policy service without metadata: none', { id: 'ext-authz', cluster: 'sekisho' }, undefined],
  ])('%s', (_what, fields, view) => {
    expect(views.classify(node(fields))).toBe(view);
  });

  it('refuses two views of one name', () => {
    const [ingress] = gatewayViews();
    expect(() => createViews([ingress, ingress] as never)).toThrow('view names must be unique');
  });
});

describe('views: one definition compiled into every view', () => {
  it('gives each view only what its nodes need', () => {
    const perView = views.compile(compiled(testDefinitionYaml()));
    expect([...(perView.get('ingress')?.keys() ?? [])]).toEqual(envoyTypes);
    expect([...(perView.get('ext-authz')?.keys() ?? [])]).toEqual([typeUrls.authzPolicy]);
    expect([...(perView.get('ratelimit')?.keys() ?? [])]).toEqual([typeUrls.rateLimitPolicy]);
    expect(perView.get('ingress')?.get(typeUrls.cluster)?.length).toBeGreaterThan(0);
  });

  it('a change to endpoints pushes to the ingress view only; the policy views stay at their versions', () => {
    const cache = new SnapshotCache();
    cache.setSnapshots(views.compile(compiled(testDefinitionYaml())));
    const changed = cache.setSnapshots(views.compile(compiled(testDefinitionYaml({ port: 3999 }))));
    expect(changed).toEqual({ ingress: [typeUrls.endpoint], 'ext-authz': [], ratelimit: [] });
  });

  it('a one-route change is one resource to push in delta: the route configuration', () => {
    const cache = new SnapshotCache();
    const before = compiled(testDefinitionYaml());
    const after = compiled(
      testDefinitionYaml().replace(
        "- match: 'GET /api/v1/customer/bookings'",
        "- match: 'GET /api/v1/customer/visits'",
      ),
    );
    cache.setSnapshots(views.compile(before));
    const held = new Map(
      [...cache.groupNames()].flatMap((group) =>
        [...envoyTypes, typeUrls.authzPolicy, typeUrls.rateLimitPolicy].flatMap((type) =>
          [...(cache.get(type, group)?.resources.values() ?? [])].map(
            (r) => [`${group} ${type} ${r.name}`, resourceVersion(r)] as const,
          ),
        ),
      ),
    );
    cache.setSnapshots(views.compile(after));
    const differing: string[] = [];
    for (const group of cache.groupNames()) {
      for (const type of [...envoyTypes, typeUrls.authzPolicy, typeUrls.rateLimitPolicy]) {
        for (const r of cache.get(type, group)?.resources.values() ?? []) {
          if (held.get(`${group} ${type} ${r.name}`) !== resourceVersion(r))
            differing.push(`${group} ${type.split('.').pop()}`);
        }
      }
    }
    // The route table is one RouteConfiguration (first match wins in declared order, so the
    // routes cannot be split across resources): one resource, however many routes there are.
    expect(differing).toEqual(['ingress RouteConfiguration']);
  });
});
