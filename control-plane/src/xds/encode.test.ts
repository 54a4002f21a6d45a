import { DeltaDiscoveryResponse, DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { describe, expect, it } from 'vitest';
import { SnapshotCache } from './cache';
import { resourceVersion } from './delta';
import { encodeDeltaResponse, encodeSotwResponse } from './encode';
import { edsCluster, resourcesOf } from './test-helpers';
import { typeUrls } from './type-urls';

const cache = new SnapshotCache();
cache.setSnapshot(resourcesOf(edsCluster('a'), edsCluster('b', 2_000)));
const resources = [...(cache.get(typeUrls.cluster)?.resources.values() ?? [])];

describe('responses encoded from cached pieces', () => {
  it('are byte for byte what encoding the whole state-of-the-world response gives', () => {
    const fields = {
      versionInfo: 'v1',
      canary: false,
      typeUrl: typeUrls.cluster,
      nonce: '3-7',
      controlPlane: { identifier: 'cp' },
    };
    const whole = DiscoveryResponse.encode({ ...fields, resources: resources.map((r) => r.resource) }).finish();
    expect(encodeSotwResponse(fields, resources)).toEqual(Buffer.from(whole));
    // Twice: the second time from the cached elements.
    expect(encodeSotwResponse(fields, resources)).toEqual(Buffer.from(whole));
    expect(encodeSotwResponse(fields, [])).toEqual(
      Buffer.from(DiscoveryResponse.encode({ ...fields, resources: [] }).finish()),
    );
  });

  it('are byte for byte what encoding the whole delta response gives', () => {
    const fields = {
      systemVersionInfo: 'v2',
      typeUrl: typeUrls.cluster,
      removedResources: ['gone'],
      removedResourceNames: [],
      nonce: '4-1',
      controlPlane: { identifier: 'cp' },
    };
    const whole = DeltaDiscoveryResponse.encode(
      DeltaDiscoveryResponse.fromPartial({
        ...fields,
        resources: resources.map((r) => ({ name: r.name, version: resourceVersion(r), resource: r.resource })),
      }),
    ).finish();
    const pieces = resources.map((r) => ({ resource: r, version: resourceVersion(r) }));
    expect(encodeDeltaResponse(fields, pieces)).toEqual(Buffer.from(whole));
    expect(encodeDeltaResponse(fields, pieces)).toEqual(Buffer.from(whole));
  });
});
