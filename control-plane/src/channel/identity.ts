import { X509Certificate } from 'node:crypto';
import type { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { parseSpiffeId, SpiffeIdError, type WorkloadIdentity } from '../mesh/spiffe';
import { typeUrls } from '../xds/type-urls';

// Who may read what over the control channel. A client's certificate names its identity
// (a SPIFFE-style URI SAN, else a DNS SAN, in the control plane's trust domain); the identity
// allows views; the node a client sends claims one. A stream is served only when the claim is a
// view the certificate allows, and then only that view's resource types: a policy service's
// certificate never reads the ingress's TLS private keys (SDS secrets).
//
// Two CAs sign client certificates (the server trusts both in the handshake), and each names
// identities of its own kind only:
// - the control channel CA: `spiffe://<channel trust domain>/ingress`, `/ext-authz`,
//   `/ratelimit`, `/sidecar/<service>` (a certificate the platform team issues per client);
// - the mesh trust bundle (a sidecar's per-pod certificate from csi-driver-spiffe, chaining to
//   the mesh root): exactly one URI SAN `spiffe://<mesh trust domain>/ns/<ns>/sa/<sa>`, which
//   reads the sidecar view of the mesh service with that namespace and service account, and
//   whose node id (`<pod>.<namespace>`) must be of that namespace.
// A certificate the channel CA signed never grants a mesh identity, and one it did not sign
// never grants a channel identity, so neither CA can mint the other's.

/** The ingress Envoy, a sidecar of one service, or one of Sekisho's policy services. */
export type View = 'ingress' | 'ext-authz' | 'ratelimit' | `sidecar:${string}`;

/** The identity names of a verified peer certificate. */
export interface PeerIdentity {
  uris: string[];
  dnsNames: string[];
  /** The subject's common name, for logs only: it never grants a view. */
  commonName?: string;
  /**
   * Which CA the certificate chains to: `control-channel` when a control channel CA certificate
   * signed it, `mesh` otherwise (the handshake verified it, so against the mesh trust bundle).
   * Undefined is taken as `control-channel` (a server that trusts only that CA).
   */
  authority?: 'control-channel' | 'mesh';
}

/** What the server knows of the mesh, for mesh identities on the control channel. */
export interface MeshChannel {
  /** CONTROL_PLANE_MESH_TRUST_DOMAIN. */
  trustDomain: string;
  /**
   * The workload SPIFFE id a sidecar view serves (the identity its workload certificate is issued
   * for), or undefined when the view serves none (not in the current definition's mesh).
   */
  workloadOf(view: string): string | undefined;
}

export type NodeAuthorization =
  | {
      ok: true;
      views: View[];
      types: ReadonlySet<string>;
      identity: string;
      /**
       * For a grant that depends on what the view serves (a mesh identity): asked again before
       * anything more is sent on the stream; a reason means the grant no longer holds.
       */
      revalidate?: () => string | undefined;
    }
  | { ok: false; reason: string; identity: string };

const envoyTypes: ReadonlySet<string> = new Set([
  typeUrls.cluster,
  typeUrls.endpoint,
  typeUrls.secret,
  typeUrls.listener,
  typeUrls.route,
]);

/** The resource types a view reads. */
export function typesOfView(view: View): ReadonlySet<string> {
  if (view === 'ext-authz') return new Set([typeUrls.authzPolicy]);
  if (view === 'ratelimit') return new Set([typeUrls.rateLimitPolicy]);
  return envoyTypes;
}

// RFC 1123 labels; service names of the definition are lower-case-with-dashes.
const label = '[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?';
const trustDomainPattern = new RegExp(`^${label}(\\.${label})*$`);
const servicePattern = /^[a-z][a-z0-9-]{0,62}$/;

/** Throws with the reason when `trustDomain` is not a lower-case DNS-style name. */
export function checkTrustDomain(trustDomain: string): string {
  if (!trustDomainPattern.test(trustDomain))
    throw new Error(`trust domain ${JSON.stringify(trustDomain)} is not a lower-case DNS name`);
  return trustDomain;
}

/** `ingress`, `ext-authz`, `ratelimit`, `sidecar/<service>` → the view; anything else none. */
function viewOfPath(segments: string[]): View | undefined {
  const [first, second, ...rest] = segments;
  if (rest.length > 0) return undefined;
  if (second === undefined) {
    if (first === 'ingress' || first === 'ext-authz' || first === 'ratelimit') return first;
    return undefined;
  }
  if (first === 'sidecar' && servicePattern.test(second)) return `sidecar:${second}`;
  return undefined;
}

/**
 * The views a certificate identity allows, in the trust domain `trustDomain`:
 * URI SANs `spiffe://<trust domain>/ingress`, `/ext-authz`, `/ratelimit`, `/sidecar/<service>`;
 * only when the certificate has no URI SAN of the trust domain, DNS SANs `ingress.<trust domain>`,
 * `ext-authz.<…>`, `ratelimit.<…>`, `<service>.sidecar.<…>`. The common name grants nothing
 * (any CA that issues for a name would otherwise issue a view).
 */
export function allowedViews(identity: PeerIdentity, trustDomain: string): View[] {
  const views = new Set<View>();
  const prefix = `spiffe://${trustDomain}/`;
  const inDomain = identity.uris.filter((uri) => uri.startsWith(prefix));
  for (const uri of inDomain) {
    const view = viewOfPath(uri.slice(prefix.length).split('/'));
    if (view) views.add(view);
  }
  if (inDomain.length === 0) {
    const suffix = `.${trustDomain}`;
    for (const name of identity.dnsNames.map((n) => n.toLowerCase())) {
      if (!name.endsWith(suffix)) continue;
      const view = viewOfPath(name.slice(0, -suffix.length).split('.').reverse());
      if (view) views.add(view);
    }
  }
  return [...views].sort();
}

/**
 * The views a node claims, by its cluster: `sekisho-ingress` (the ingress Envoy's bootstrap),
 * `sidecar:<service>`, or `sekisho` (service-kit's policy client, for either policy service: the
 * certificate decides which).
 */
export function claimedViews(node: Node): View[] {
  const cluster = node.cluster;
  if (cluster === 'sekisho-ingress') return ['ingress'];
  if (cluster === 'sekisho') return ['ext-authz', 'ratelimit'];
  if (cluster.startsWith('sidecar:') && servicePattern.test(cluster.slice('sidecar:'.length))) return [cluster as View];
  return [];
}

/** How an identity is named in logs and refusals: its first URI, else DNS name, else CN. */
export function describeIdentity(identity: PeerIdentity | undefined): string {
  if (!identity) return '(no client certificate)';
  return identity.uris[0] ?? identity.dnsNames[0] ?? `CN=${identity.commonName ?? '?'}`;
}

function isView(view: string): view is View {
  return (
    view === 'ingress' || view === 'ext-authz' || view === 'ratelimit' || /^sidecar:[a-z][a-z0-9-]{0,62}$/.test(view)
  );
}

/**
 * Whether `node` (classified into `view`, when the server has views), presented by a client whose certificate is `identity`, may be served, and what. */
export function authorize(
  node: Node,
  identity: PeerIdentity | undefined,
  trustDomain: string,
  view?: string,
  mesh?: MeshChannel,
): NodeAuthorization {
  const name = describeIdentity(identity);
  if (!identity) return { ok: false, reason: 'the client presented no verified certificate', identity: name };
  if (identity.authority === 'mesh') return authorizeWorkload(node, identity, view, mesh);
  const allowed = allowedViews(identity, trustDomain);
  // The view the server classified the node into (xds/views.ts) is what it would be served, so
  // that is the claim; without a classifier, the node's cluster names it.
  const claimed = view === undefined ? claimedViews(node) : isView(view) ? [view] : [];
  if (claimed.length === 0)
    return { ok: false, reason: `node cluster ${JSON.stringify(node.cluster)} names no view`, identity: name };
  const views = claimed.filter((view) => allowed.includes(view));
  if (views.length === 0) {
    return {
      ok: false,
      reason:
        `certificate ${name} allows ${allowed.length ? allowed.join(', ') : 'no view'} ` +
        `(trust domain ${trustDomain}); node ${JSON.stringify(node.id)} of cluster ${JSON.stringify(node.cluster)} claims ${claimed.join(' or ')}`,
      identity: name,
    };
  }
  return { ok: true, views, types: new Set(views.flatMap((view) => [...typesOfView(view)])), identity: name };
}

/** The namespace of a sidecar's node id `<pod>.<namespace>` (a namespace is a DNS label, a pod name may have dots). */
function namespaceOfNodeId(id: string): string | undefined {
  const at = id.lastIndexOf('.');
  return at > 0 && at < id.length - 1 ? id.slice(at + 1) : undefined;
}

/** A certificate that chains to the mesh trust bundle: a workload identity, for its own sidecar view only. */
function authorizeWorkload(
  node: Node,
  identity: PeerIdentity,
  view: string | undefined,
  mesh: MeshChannel | undefined,
): NodeAuthorization {
  const name = describeIdentity(identity);
  const refuse = (reason: string): NodeAuthorization => ({ ok: false, reason, identity: name });
  if (!mesh) return refuse('this control plane has no mesh CA, so it serves no workload identity');
  if (identity.uris.length !== 1)
    return refuse(`a mesh certificate must have exactly one URI SAN, this one has ${identity.uris.length}`);
  const uri = identity.uris[0] as string;
  let workload: WorkloadIdentity;
  try {
    workload = parseSpiffeId(uri);
  } catch (error) {
    return refuse(error instanceof SpiffeIdError ? error.message : String(error));
  }
  if (workload.trustDomain !== mesh.trustDomain)
    return refuse(
      `certificate ${uri} is of the trust domain ${workload.trustDomain}; the mesh's is ${mesh.trustDomain}`,
    );
  const claimed = view ?? node.cluster;
  if (!/^sidecar:[a-z][a-z0-9-]{0,62}$/.test(claimed))
    return refuse(
      `a workload identity reads only its sidecar view; node ${JSON.stringify(node.id)} of cluster ${JSON.stringify(node.cluster)} claims ${claimed || 'no view'}`,
    );
  const served = mesh.workloadOf(claimed);
  if (served === undefined) return refuse(`${claimed} serves no mesh workload in the current definition`);
  if (served !== uri) return refuse(`certificate ${uri} is not the workload of ${claimed} (${served})`);
  const namespace = namespaceOfNodeId(node.id);
  if (namespace !== workload.namespace)
    return refuse(
      `node id ${JSON.stringify(node.id)} is not of the namespace ${workload.namespace} its certificate names (expected <pod>.${workload.namespace})`,
    );
  return {
    ok: true,
    views: [claimed as View],
    types: envoyTypes,
    identity: name,
    // A new definition may give the view another workload (its service account changed): that
    // workload's certificate and key must never reach this stream.
    revalidate: () => {
      const now = mesh.workloadOf(claimed);
      return now === uri ? undefined : `${claimed} now serves ${now ?? 'no mesh workload'}, not ${uri}`;
    },
  };
}

/**
 * The names of a DER certificate (from the TLS socket; already verified against the client CA).
 * X509Certificate.subjectAltName lists `DNS:a, URI:b, IP Address:c`; a value with a comma or a
 * quote in it comes JSON-quoted.
 */
export function peerIdentityOf(
  der: Buffer | undefined,
  channelAuthorities?: readonly X509Certificate[],
): PeerIdentity | undefined {
  if (!der || der.length === 0) return undefined;
  const certificate = new X509Certificate(der);
  const identity: PeerIdentity = { uris: [], dnsNames: [] };
  // The channel CA signs leaves directly; any other verified chain ends in the mesh bundle.
  if (channelAuthorities)
    identity.authority = channelAuthorities.some(
      (ca) => certificate.checkIssued(ca) && certificate.verify(ca.publicKey),
    )
      ? 'control-channel'
      : 'mesh';
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(certificate.subject);
  if (cn?.[1]) identity.commonName = cn[1];
  const text = certificate.subjectAltName ?? '';
  const entry = /([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/y;
  for (let match = entry.exec(text); match; match = entry.exec(text)) {
    const [, kind, raw = ''] = match;
    let value = raw;
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string;
      } catch {
        continue;
      }
    }
    if (kind === 'URI') identity.uris.push(value);
    else if (kind === 'DNS') identity.dnsNames.push(value);
    if (entry.lastIndex >= text.length) break;
  }
  return identity;
}
