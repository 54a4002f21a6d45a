import type { ServiceDefinition } from '@grpc/grpc-js';
import { DeltaDiscoveryResponse, DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import type { CachedResource } from './cache';

// Responses as bytes, built from pieces encoded once. A route configuration of 1,000 routes is
// about 1 MB; encoding the whole response per stream copied it several times (nested messages
// are encoded into buffers of their own, and delta nests it twice), which dominated the
// control plane's CPU for a push to many proxies. A protobuf message is the concatenation of
// its fields and a repeated field the concatenation of its elements, so each resource's
// `resources` element is encoded once (per resource content, per variant) and every response
// is one concatenation of those with its small per-stream fields.

const sotwElements = new WeakMap<CachedResource, Uint8Array>();
const deltaElements = new WeakMap<CachedResource, Uint8Array>();

/** The encoded `resources` element of a state-of-the-world response (field 2: Any). */
function sotwElement(r: CachedResource): Uint8Array {
  let bytes = sotwElements.get(r);
  if (!bytes) {
    bytes = DiscoveryResponse.encode(DiscoveryResponse.fromPartial({ resources: [r.resource] })).finish();
    sotwElements.set(r, bytes);
  }
  return bytes;
}

/** The encoded `resources` element of a delta response (field 2: Resource with name, version, Any). */
function deltaElement(r: CachedResource, version: string): Uint8Array {
  let bytes = deltaElements.get(r);
  if (!bytes) {
    bytes = DeltaDiscoveryResponse.encode(
      DeltaDiscoveryResponse.fromPartial({ resources: [{ name: r.name, version, resource: r.resource }] }),
    ).finish();
    deltaElements.set(r, bytes);
  }
  return bytes;
}

/** `response` with `resources` encoded from the cache: the same bytes as DiscoveryResponse.encode. */
export function encodeSotwResponse(
  response: Omit<DiscoveryResponse, 'resources'>,
  resources: readonly CachedResource[],
): Buffer {
  const head = DiscoveryResponse.encode(DiscoveryResponse.fromPartial({ versionInfo: response.versionInfo })).finish();
  const tail = DiscoveryResponse.encode({ ...response, versionInfo: '', resources: [] }).finish();
  return Buffer.concat([head, ...resources.map(sotwElement), tail]);
}

/** `response` with `resources` (each with its version) encoded from the cache. */
export function encodeDeltaResponse(
  response: Omit<DeltaDiscoveryResponse, 'resources'>,
  resources: ReadonlyArray<{ resource: CachedResource; version: string }>,
): Buffer {
  const head = DeltaDiscoveryResponse.encode(
    DeltaDiscoveryResponse.fromPartial({ systemVersionInfo: response.systemVersionInfo }),
  ).finish();
  const tail = DeltaDiscoveryResponse.encode({ ...response, systemVersionInfo: '', resources: [] }).finish();
  return Buffer.concat([head, ...resources.map((r) => deltaElement(r.resource, r.version)), tail]);
}

/** `definition` whose streaming responses may also be written as bytes already encoded. */
export function acceptingEncoded<D extends ServiceDefinition>(definition: D): D {
  const out: Record<string, unknown> = {};
  for (const [method, spec] of Object.entries(definition)) {
    const serialize = spec.responseSerialize;
    out[method] = {
      ...spec,
      responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value)),
    };
  }
  return out as D;
}
