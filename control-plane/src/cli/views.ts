// Views: which resources one kind of node is served, the same views the running control plane
// classifies its nodes into (xds/views.ts): `ingress` (the gateway's Envoy), `ext-authz` and
// `ratelimit` (each policy service's own policy), and `sidecar:<service>` for every service of
// the definition's mesh. The CLI has no mesh CA: the workload Secrets of mesh views are shown
// as placeholders (the control plane serves certificates its mesh CA issues at run time).
import type { CompileResult } from '../definition/load';
import type { WorkloadSecrets } from '../mesh/contract';
import { certificateSecret, trustBundleSecret } from '../mesh/secrets';
import type { ResourcesByType } from '../xds/resources';
import { createViews, gatewayViews, sidecarViews } from '../xds/views';
import { UsageError } from './io';

export type View = { kind: 'served'; name: string } | { kind: 'sidecar'; service: string };

const fixedViews = createViews(gatewayViews()).names;

export const viewSyntax = `${fixedViews.join(' | ')} | sidecar:<service>`;

/** What the CLI shows for a workload's Secrets: their names and kinds, never key material. */
export const placeholderSecrets: WorkloadSecrets = {
  secretsFor: (spiffeId) => [
    certificateSecret({
      chainPem: `[issued by the mesh CA for ${spiffeId} at run time]`,
      privateKeyPem: '[redacted]',
    }),
    trustBundleSecret("[the mesh CA's trust bundle]"),
  ],
  onRotation: () => {},
};

/**
 * A workload's Secrets from PEM files (`render --workload-cert/--workload-key/--trust-bundle`):
 * the same certificate for every mesh view rendered, e.g. one the mesh CA issued, so that a
 * mesh view's `--bootstrap` can be checked with `envoy --mode validate`.
 */
export function fileSecrets(files: {
  certificatePem: string;
  privateKeyPem: string;
  trustBundlePem: string;
}): WorkloadSecrets {
  const secrets = [
    certificateSecret({ chainPem: files.certificatePem, privateKeyPem: files.privateKeyPem }),
    trustBundleSecret(files.trustBundlePem),
  ];
  return { secretsFor: () => secrets, onRotation: () => {} };
}

export function parseView(text: string, usage: string): View {
  if (fixedViews.includes(text)) return { kind: 'served', name: text };
  const sidecar = /^sidecar:([a-z][a-z0-9-]*)$/.exec(text);
  if (sidecar?.[1] !== undefined) return { kind: 'sidecar', service: sidecar[1] };
  throw new UsageError(`--view: unknown view "${text}" (views: ${viewSyntax})`, usage);
}

export function viewName(view: View): string {
  return view.kind === 'served' ? view.name : `sidecar:${view.service}`;
}

/** Whether the view's resources hold workload Secrets the CLI can only show as placeholders. */
export function hasPlaceholderSecrets(compiled: Extract<CompileResult, { ok: true }>, view: View): boolean {
  return compiled.ir.mesh !== undefined && (view.kind === 'sidecar' || view.name === 'ingress');
}

/** The resources a node of `view` is served by a control plane running this definition. */
export function viewResources(
  compiled: Extract<CompileResult, { ok: true }>,
  view: View,
  usage: string,
  secrets: WorkloadSecrets = placeholderSecrets,
): ResourcesByType {
  const name = viewName(view);
  if (view.kind === 'sidecar') {
    const mesh = compiled.ir.mesh?.services.map((service) => service.name) ?? [];
    if (!mesh.includes(view.service)) {
      const known = mesh.length > 0 ? `mesh services: ${mesh.join(', ')}` : 'the definition has no mesh';
      throw new UsageError(`--view ${name}: names no service of the definition's mesh (${known})`, usage);
    }
  }
  const views = createViews(gatewayViews(secrets), sidecarViews(secrets));
  const resources = views.compile({ ir: compiled.ir, resources: compiled.resources }).get(name);
  if (!resources) throw new Error(`view ${name} compiled to nothing`);
  return resources;
}
