// Views: which resources one kind of node is served. `ingress` is everything the compiled
// definition serves today (the gateway's Envoy and both policy services). Per-node views
// (`sidecar:<service>`) are parsed here already; their resources come from the xDS views
// once the control plane builds them, in `viewResources` below, the only place to change.
import type { CompileResult } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { UsageError } from './io';

export type View = { kind: 'ingress' } | { kind: 'sidecar'; service: string };

export const viewSyntax = 'ingress | sidecar:<service>';

export function parseView(text: string, usage: string): View {
  if (text === 'ingress') return { kind: 'ingress' };
  const sidecar = /^sidecar:(.+)$/.exec(text);
  if (sidecar?.[1] !== undefined) return { kind: 'sidecar', service: sidecar[1] };
  throw new UsageError(`--view: unknown view "${text}" (views: ${viewSyntax})`, usage);
}

export function viewName(view: View): string {
  return view.kind === 'ingress' ? 'ingress' : `sidecar:${view.service}`;
}

/** The resources a node of `view` is served by a control plane running this definition. */
export function viewResources(
  compiled: Extract<CompileResult, { ok: true }>,
  view: View,
  usage: string,
): ResourcesByType {
  switch (view.kind) {
    case 'ingress':
      return compiled.resources;
    case 'sidecar':
      // Not served by this control plane yet: saying so beats printing resources no node gets.
      if (!Object.hasOwn(compiled.definition.services, view.service)) {
        throw new UsageError(`--view ${viewName(view)}: names no service of the definition`, usage);
      }
      throw new UsageError(
        `--view ${viewName(view)}: sidecar views are not served by this control plane yet (views: ingress)`,
        usage,
      );
  }
}
