import type { JsonPatchOperation } from './admission';
import { proxyLabel, statusAnnotation } from './annotations';
import type { SidecarParts } from './sidecar';
import type { Pod } from './workload';

// The JSONPatch (RFC 6902) that turns the submitted pod into the injected one. Arrays that
// are absent are added whole (a patch may not append to a missing array).

const pointerToken = (key: string) => key.replaceAll('~', '~0').replaceAll('/', '~1');

export function injectionPatch(pod: Pod, parts: SidecarParts): JsonPatchOperation[] {
  const ops: JsonPatchOperation[] = [];
  if (parts.initContainers.length) {
    if (!pod.spec.initContainers) ops.push({ op: 'add', path: '/spec/initContainers', value: parts.initContainers });
    // Each at the front, in reverse, so they end up first and in order: the proxy must be
    // running before the pod's own init containers, which may need the network.
    else
      for (const container of [...parts.initContainers].reverse())
        ops.push({ op: 'add', path: '/spec/initContainers/0', value: container });
  }
  for (const container of parts.containers) ops.push({ op: 'add', path: '/spec/containers/-', value: container });
  if (!pod.spec.volumes) ops.push({ op: 'add', path: '/spec/volumes', value: parts.volumes });
  else for (const volume of parts.volumes) ops.push({ op: 'add', path: '/spec/volumes/-', value: volume });
  const added = { [statusAnnotation]: 'injected', ...parts.annotations };
  if (!pod.metadata) ops.push({ op: 'add', path: '/metadata', value: { annotations: added } });
  else if (!pod.metadata.annotations) ops.push({ op: 'add', path: '/metadata/annotations', value: added });
  else
    for (const [key, value] of Object.entries(added))
      ops.push({ op: 'add', path: `/metadata/annotations/${pointerToken(key)}`, value });
  // A label (annotations cannot be selected on) for the sidecars' PodMonitor.
  if (!pod.metadata?.labels) ops.push({ op: 'add', path: '/metadata/labels', value: { [proxyLabel]: 'sidecar' } });
  else ops.push({ op: 'add', path: `/metadata/labels/${pointerToken(proxyLabel)}`, value: 'sidecar' });
  return ops;
}
