import type { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { nodeViewKey, policyViews } from '@sekisho/service-kit/contract';
import type { FieldError } from '../definition/field-error';
import type { GatewayIR } from '../ir/types';
import type { WorkloadSecrets } from '../mesh/contract';
import { sidecarNodeCluster, translateSidecar } from '../translate/sidecar/index';
import type { Resource, ResourcesByType } from './resources';
import { typeUrls } from './type-urls';

// Views: which part of the one compiled definition each xDS client gets. A node is
// classified by its node (metadata, cluster, id) into exactly one view; each view is its own
// snapshot group in the cache, so a change that does not touch a view pushes nothing to its
// nodes. A node that matches no view is served nothing (and reported by the server).
//
// Besides the fixed views (the ingress and the two policy services), a family of views can
// follow the definition: the sidecar views (`sidecar:<service>`, one per mesh service, see
// sidecarViews). A view of a family that the definition no longer has (a service removed from
// the mesh) is kept and served empty resources, so its proxies drop what they were given.

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

/** Views whose number follows the definition: one per mesh service, say. */
export interface ViewFamily {
  /** Whether `name` is (or could be) a view of this family. */
  owns(name: string): boolean;
  /** The family's view of a node that names none in its metadata; undefined when not of this family. */
  classify(node: Node): string | undefined;
  /** The family's views of a definition, each with its resources. */
  compile(compiled: CompiledDefinition): Map<string, ResourcesByType>;
  /** What a view that the definition no longer has is served. */
  readonly removed: ResourcesByType;
}

export interface Views {
  /** The fixed views, then the family's views the definitions so far had (sorted). */
  readonly names: readonly string[];
  /** The view of `node`, or undefined when none matches (the node is served nothing). */
  classify(node: Node): string | undefined;
  /**
   * Every view's resources, from one compiled definition (views it no longer has: empty).
   * Throws DefinitionRefusedError when the definition cannot be served (e.g. a mesh without a CA).
   */
  compile(compiled: CompiledDefinition): Map<string, ResourcesByType>;
  /** Whether a saved snapshot group is a view of this control plane (for the last good store). */
  accepts(name: string): boolean;
  /** Family views restored from the last good store: from now on listed and kept. */
  restore(names: readonly string[]): void;
}

/** A definition that compiled but that this control plane cannot serve; the errors name the fields. */
export class DefinitionRefusedError extends Error {
  constructor(readonly errors: FieldError[]) {
    super(errors.map((error) => `${error.path}: ${error.message}`).join('; '));
    this.name = 'DefinitionRefusedError';
  }
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

const noCaMessage =
  'the definition has a mesh, but this control plane has no mesh CA to issue the workloads their certificates ' +
  '(a sidecar would wait for its SDS secrets forever); configure the mesh CA or remove mesh';

function secretsOf(secrets: WorkloadSecrets | undefined, spiffeId: string): Resource[] {
  if (!secrets) throw new DefinitionRefusedError([{ path: 'mesh', message: noCaMessage }]);
  try {
    return secrets.secretsFor(spiffeId);
  } catch (error) {
    // An identity the CA will not issue (another trust domain than the CA's): the definition's fault.
    throw new DefinitionRefusedError([
      { path: 'mesh', message: `the mesh CA issues no certificate for ${spiffeId}: ${(error as Error).message}` },
    ]);
  }
}

/** `resources` with `extra` Secrets added, sorted by name. */
function withSecrets(resources: ResourcesByType, extra: readonly Resource[]): ResourcesByType {
  if (extra.length === 0) return resources;
  const secrets = [...(resources.get(typeUrls.secret) ?? []), ...extra].sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  return new Map([...resources, [typeUrls.secret, secrets]]);
}

/**
 * The views of the gateway: the ingress and the two policy services. With a mesh, the ingress
 * is a mesh workload too: its view also gets its workload Secrets from `secrets` (its clusters of
 * mesh services present that certificate).
 */
export function gatewayViews(secrets?: WorkloadSecrets): View[] {
  return [
    {
      name: 'ingress',
      matches: (node) => node.cluster === ingressNodeCluster,
      select: (compiled) => {
        const resources = typesOnly(envoyTypes)(compiled);
        const mesh = compiled.ir.mesh;
        return mesh ? withSecrets(resources, secretsOf(secrets, mesh.ingressSpiffeId)) : resources;
      },
    },
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

const sidecarName = /^sidecar:[a-z][a-z0-9-]{0,62}$/;

/**
 * One view per mesh service, `sidecar:<service>`: its node announces that as its cluster
 * (injector/README.md). Each is translated from the IR (translate/sidecar) with the workload's
 * Secrets from `secrets`; a definition with a mesh and no `secrets` is refused (field mesh).
 * The translation is kept per compiled IR: a certificate rotation serves the same IR again,
 * and only its Secrets are new (the other resources stay the same objects, hashed the same).
 */
export function sidecarViews(secrets: WorkloadSecrets | undefined): ViewFamily {
  const translated = new WeakMap<GatewayIR, Map<string, ResourcesByType>>();
  return {
    owns: (name) => sidecarName.test(name),
    classify: (node) => (sidecarName.test(node.cluster) ? node.cluster : undefined),
    compile: ({ ir }) => {
      let byService = translated.get(ir);
      if (byService === undefined) {
        byService = new Map();
        translated.set(ir, byService);
      }
      const views = new Map<string, ResourcesByType>();
      for (const service of ir.mesh?.services ?? []) {
        let resources = byService.get(service.name);
        if (resources === undefined) {
          resources = translateSidecar(ir, service);
          byService.set(service.name, resources);
        }
        views.set(sidecarNodeCluster(service.name), withSecrets(resources, secretsOf(secrets, service.spiffeId)));
      }
      return views;
    },
    removed: new Map(envoyTypes.map((type) => [type, []])),
  };
}

/** A view named by the node's metadata (`sekisho.view`), else by the first view that matches it. */
export function createViews(views: readonly View[], family?: ViewFamily): Views {
  const byName = new Map(views.map((view) => [view.name, view]));
  if (byName.size !== views.length) throw new Error('view names must be unique');
  const fixed = views.map((view) => view.name);
  if (family && fixed.some((name) => family.owns(name))) throw new Error('a fixed view is named like a family view');
  /** Every family view some definition so far had. */
  const known = new Set<string>();
  const names = () => [...fixed, ...[...known].sort()];
  return {
    get names() {
      return names();
    },
    classify(node) {
      const named: unknown = node.metadata?.[nodeViewKey];
      // A node that names its view gets that view or nothing: never a guess.
      if (named !== undefined) {
        if (typeof named !== 'string') return undefined;
        return byName.has(named) || known.has(named) ? named : undefined;
      }
      const fixedView = views.find((view) => view.matches(node))?.name;
      if (fixedView !== undefined) return fixedView;
      // A family view only once a definition had it: until then the node is of no view, and reported.
      const familyView = family?.classify(node);
      return familyView !== undefined && known.has(familyView) ? familyView : undefined;
    },
    compile: (compiled) => {
      const result = new Map(views.map((view) => [view.name, view.select(compiled)]));
      if (!family) return result;
      const current = family.compile(compiled);
      for (const name of known) if (!current.has(name)) result.set(name, family.removed);
      for (const [name, resources] of current) result.set(name, resources);
      // Only once everything compiled: a refused definition leaves the list as it was.
      for (const name of current.keys()) known.add(name);
      return result;
    },
    accepts: (name) => byName.has(name) || (family?.owns(name) ?? false),
    restore: (restored) => {
      for (const name of restored) if (family?.owns(name)) known.add(name);
    },
  };
}
