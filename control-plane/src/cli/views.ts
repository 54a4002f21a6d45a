// Views: which resources one kind of node is served, the same views the running control plane
// classifies its nodes into (xds/views.ts): `ingress` (the gateway's Envoy), `ext-authz` and
// `ratelimit` (each policy service's own policy). Sidecar views (`sidecar:<service>`) are parsed
// already and refused until the control plane serves them.
import type { CompileResult } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { createViews, gatewayViews } from '../xds/views';
import { UsageError } from './io';

export type View = { kind: 'served'; name: string } | { kind: 'sidecar'; service: string };

const served = createViews(gatewayViews());

export const viewSyntax = `${served.names.join(' | ')} | sidecar:<service>`;

export function parseView(text: string, usage: string): View {
  if (served.names.includes(text)) return { kind: 'served', name: text };
  const sidecar = /^sidecar:(.+)$/.exec(text);
  if (sidecar?.[1] !== undefined) return { kind: 'sidecar', service: sidecar[1] };
  throw new UsageError(`--view: unknown view "${text}" (views: ${viewSyntax})`, usage);
}

export function viewName(view: View): string {
  return view.kind === 'served' ? view.name : `sidecar:${view.service}`;
}

/** The resources a node of `view` is served by a control plane running this definition. */
export function viewResources(
  compiled: Extract<CompileResult, { ok: true }>,
  view: View,
  usage: string,
): ResourcesByType {
  switch (view.kind) {
    case 'served': {
      const resources = served.compile({ ir: compiled.ir, resources: compiled.resources }).get(view.name);
      if (!resources) throw new Error(`view ${view.name} compiled to nothing`);
      return resources;
    }
    case 'sidecar':
      // Not served by this control plane yet: saying so beats printing resources no node gets.
      if (!Object.hasOwn(compiled.definition.services, view.service)) {
        throw new UsageError(`--view ${viewName(view)}: names no service of the definition`, usage);
      }
      throw new UsageError(
        `--view ${viewName(view)}: sidecar views are not served by this control plane yet (views: ${served.names.join(', ')})`,
        usage,
      );
  }
}
