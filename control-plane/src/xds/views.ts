import type { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { nodeViewKey, policyViews } from '@sekisho/service-kit/contract';
import type { GatewayIR } from '../ir/types';
import type { ResourcesByType } from './resources';
import { typeUrls } from './type-urls';

// Views: which part of the one compiled definition each xDS client gets. A node is
// classified by its node (metadata, cluster, id) into exactly one view; each view is its own
// snapshot group in the cache, so a change that does not touch a view pushes nothing to its
// nodes. A node that matches no view is served nothing (and reported by the server).
//
// The mesh work extends this by adding views (one per sidecar, `sidecar:<service>`) to the
// list given to createViews; the server and cache need no change.

/** What every view is compiled from: one definition's IR and the resources translated from it. */
export interface CompiledDefinition {
  ir: GatewayIR;
  resources: ResourcesByType;
}

export interface View {
  /** The view's name: the cache group its nodes read, shown in /status and metrics. */
  readonly name: string;
  /** Whether a node that names no view in its metadata belongs here. */
  matches(node: Node): boolean;
  /**
   * What this view's nodes need of the compiled definition, never more: a subset of its
   * resources, or resources of the view's own translated from the IR (a sidecar's).
   */
  select(compiled: CompiledDefinition): ResourcesByType;
}

export interface Views {
  readonly names: readonly string[];
  /** The view of `node`, or undefined when none matches (the node is served nothing). */
  classify(node: Node): string | undefined;
  /** Every view's resources, from one compiled definition. */
  compile(compiled: CompiledDefinition): Map<string, ResourcesByType>;
}

/** The resources of `types` only (each present, empty when the definition has none). */
export const typesOnly =
  (types: readonly string[]) =>
  ({ resources }: CompiledDefinition): ResourcesByType =>
    new Map(types.map((type) => [type, resources.get(type) ?? []]));

/** The Envoy types an ingress proxy is served: everything but Sekisho's policy resources. */
export const envoyTypes: readonly string[] = [
  typeUrls.cluster,
  typeUrls.endpoint,
  typeUrls.secret,
  typeUrls.listener,
  typeUrls.route,
];

/** The node cluster the ingress Envoy announces (devstack, k8s/). */
export const ingressNodeCluster = 'sekisho-ingress';

/** The views of today's gateway: the ingress and the two policy services. */
export function gatewayViews(): View[] {
  return [
    { name: 'ingress', matches: (node) => node.cluster === ingressNodeCluster, select: typesOnly(envoyTypes) },
    {
      name: policyViews.extAuthz,
      matches: () => false,
      select: typesOnly([typeUrls.authzPolicy]),
    },
    {
      name: policyViews.rateLimit,
      matches: () => false,
      select: typesOnly([typeUrls.rateLimitPolicy]),
    },
  ];
}

/** A view named by the node's metadata (`sekisho.view`), else by the first view that matches it. */
export function createViews(views: readonly View[]): Views {
  const byName = new Map(views.map((view) => [view.name, view]));
  if (byName.size !== views.length) throw new Error('view names must be unique');
  return {
    names: views.map((view) => view.name),
    classify(node) {
      const named: unknown = node.metadata?.[nodeViewKey];
      // A node that names its view gets that view or nothing: never a guess.
      if (named !== undefined) return typeof named === 'string' && byName.has(named) ? named : undefined;
      return views.find((view) => view.matches(node))?.name;
    },
    compile: (compiled) => new Map(views.map((view) => [view.name, view.select(compiled)])),
  };
}
