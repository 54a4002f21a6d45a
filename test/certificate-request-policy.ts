// An offline model of how cert-manager's approver-policy decides a CertificateRequest, for the
// fields Sekisho's CertificateRequestPolicies use (k8s/mesh-identity/certificaterequestpolicies.yaml),
// written from approver-policy's source (pkg/internal/approver/manager, .../allowed,
// .../constraints, .../predicate): a policy is considered only if its selector matches the
// request's issuer and namespace and the request's creator may `use` it (RBAC); the request is
// approved if one considered policy allows it. `allowed`: an omitted field must be empty in the
// request; `constraints`: an omitted field restricts nothing. A field or CEL rule this model does
// not know throws, so a policy cannot pass the tests by using something unchecked.

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests (schema-checked by the manifest tests).
type Json = Record<string, any>;

/** What approver-policy sees of a CertificateRequest (its spec, the CSR's contents, its creator). */
export interface Request {
  namespace: string;
  issuerRef: { name: string; kind?: string; group?: string };
  commonName?: string;
  dnsNames?: string[];
  uris?: string[];
  ipAddresses?: string[];
  emailAddresses?: string[];
  isCA?: boolean;
  usages?: string[];
  duration?: string;
  key: { algorithm: 'RSA' | 'ECDSA' | 'Ed25519'; size: number };
}

export interface Requester {
  username: string;
  groups: string[];
}

/** The CertificateRequest cert-manager's controller creates for a Certificate (requestmanager). */
export function requestOf(certificate: Json, namespace: string): Request {
  const spec = certificate.spec;
  const algorithm = spec.privateKey?.algorithm ?? 'RSA';
  const size = spec.privateKey?.size ?? (algorithm === 'RSA' ? 2048 : algorithm === 'ECDSA' ? 256 : -1);
  return {
    namespace: certificate.metadata.namespace ?? namespace,
    issuerRef: spec.issuerRef,
    commonName: spec.commonName,
    dnsNames: spec.dnsNames,
    uris: spec.uris,
    ipAddresses: spec.ipAddresses,
    emailAddresses: spec.emailAddresses,
    isCA: spec.isCA,
    usages: spec.usages,
    duration: spec.duration,
    key: { algorithm, size },
  };
}

/** `*` matches any run of characters, as approver-policy's WildcardMatches. */
export function wildcardMatches(pattern: string, value: string): boolean {
  if (pattern === '') return value === '';
  const regex = new RegExp(`^${pattern.split('*').map(escapeRegExp).join('.*')}$`, 's');
  return regex.test(value);
}
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Go durations of hours, minutes and seconds, in seconds. */
export function durationSeconds(duration: string): number {
  const parts = [...duration.matchAll(/(\d+)(h|m|s)/g)];
  if (parts.map((p) => p[0]).join('') !== duration) throw new Error(`unsupported duration ${duration}`);
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * { h: 3600, m: 60, s: 1 }[unit as 'h' | 'm' | 's'], 0);
}

/**
 * The only CEL rule forms Sekisho's policies use: `self in ['a', 'b']` and `self.matches('re')`
 * (RE2; the patterns used are plain enough to mean the same in JavaScript).
 */
function celAllows(rule: string, value: string): boolean {
  const list = /^self in \[(.*)\]$/.exec(rule.trim());
  if (list) return [...(list[1] as string).matchAll(/'([^']*)'\s*(,|$)/g)].map((m) => m[1]).includes(value);
  const regex = /^self\.matches\('([^'\\]*)'\)$/.exec(rule.trim());
  if (regex) return new RegExp(regex[1] as string).test(value);
  throw new Error(`unsupported CEL rule ${rule}`);
}

const known = (object: Json | undefined, fields: string[], where: string) => {
  for (const key of Object.keys(object ?? {}))
    if (!fields.includes(key)) throw new Error(`${where}.${key} is not modelled`);
};

function stringAllowed(value: string | undefined, allowed: Json | undefined): string | undefined {
  known(allowed, ['value', 'required', 'validations'], 'allowed string');
  if (!value) return allowed?.required ? 'required' : undefined;
  if (!allowed || (allowed.value === undefined && !allowed.validations?.length)) return `${value}: no allowed value`;
  if (allowed.value !== undefined && !wildcardMatches(allowed.value, value)) return `${value} is not ${allowed.value}`;
  for (const v of allowed.validations ?? []) if (!celAllows(v.rule, value)) return `${value} fails ${v.rule}`;
  return undefined;
}

function sliceAllowed(values: string[] | undefined, allowed: Json | undefined): string | undefined {
  known(allowed, ['values', 'required', 'validations'], 'allowed list');
  if (!values?.length) return allowed?.required ? 'required' : undefined;
  if (!allowed || (allowed.values === undefined && !allowed.validations?.length)) return `${values}: no allowed values`;
  for (const value of values) {
    if (allowed.values !== undefined && !allowed.values.some((p: string) => wildcardMatches(p, value)))
      return `${value} is not allowed`;
    for (const v of allowed.validations ?? []) if (!celAllows(v.rule, value)) return `${value} fails ${v.rule}`;
  }
  return undefined;
}

/** Why `policy` denies `request` (allowed and constraints), or an empty list if it allows it. */
export function policyDenials(policy: Json, request: Request): string[] {
  const allowed: Json = policy.spec.allowed ?? {};
  const constraints: Json | undefined = policy.spec.constraints;
  known(policy.spec, ['allowed', 'constraints', 'selector'], 'spec');
  known(allowed, ['commonName', 'dnsNames', 'uris', 'ipAddresses', 'emailAddresses', 'isCA', 'usages'], 'allowed');
  known(constraints, ['minDuration', 'maxDuration', 'privateKey'], 'constraints');
  const denials: Array<string | undefined> = [
    stringAllowed(request.commonName, allowed.commonName),
    sliceAllowed(request.dnsNames, allowed.dnsNames),
    sliceAllowed(request.uris, allowed.uris),
    sliceAllowed(request.ipAddresses, allowed.ipAddresses),
    sliceAllowed(request.emailAddresses, allowed.emailAddresses),
    request.isCA && allowed.isCA !== true ? 'isCA' : undefined,
    request.usages?.length && !request.usages.every((u) => (allowed.usages ?? []).includes(u))
      ? `usages ${request.usages}`
      : undefined,
  ];
  if (constraints?.maxDuration !== undefined)
    denials.push(
      request.duration === undefined || durationSeconds(request.duration) > durationSeconds(constraints.maxDuration)
        ? `duration ${request.duration} above ${constraints.maxDuration}`
        : undefined,
    );
  if (constraints?.minDuration !== undefined)
    denials.push(
      request.duration === undefined || durationSeconds(request.duration) < durationSeconds(constraints.minDuration)
        ? `duration ${request.duration} below ${constraints.minDuration}`
        : undefined,
    );
  const key = constraints?.privateKey;
  known(key, ['algorithm', 'minSize', 'maxSize'], 'constraints.privateKey');
  if (key?.algorithm !== undefined && key.algorithm !== request.key.algorithm)
    denials.push(`key ${request.key.algorithm}`);
  if (key?.minSize !== undefined && request.key.size < key.minSize) denials.push(`key size ${request.key.size}`);
  if (key?.maxSize !== undefined && request.key.size > key.maxSize) denials.push(`key size ${request.key.size}`);
  return denials.filter((d): d is string => d !== undefined);
}

/** The selector predicates: issuerRef (kind and group defaulted as cert-manager does) and namespace. */
export function selectorMatches(policy: Json, request: Request, namespaceLabels: Record<string, string>): boolean {
  const { issuerRef, namespace } = policy.spec.selector;
  known(issuerRef, ['name', 'kind', 'group'], 'selector.issuerRef');
  known(namespace, ['matchNames', 'matchLabels'], 'selector.namespace');
  const ref = {
    name: request.issuerRef.name,
    kind: request.issuerRef.kind || 'Issuer',
    group: request.issuerRef.group || 'cert-manager.io',
  };
  if (issuerRef)
    for (const field of ['name', 'kind', 'group'] as const)
      if (issuerRef[field] !== undefined && !wildcardMatches(issuerRef[field], ref[field])) return false;
  if (namespace) {
    const names: string[] = namespace.matchNames ?? [];
    if (names.length && !names.some((n) => wildcardMatches(n, request.namespace))) return false;
    for (const [k, v] of Object.entries(namespace.matchLabels ?? {})) if (namespaceLabels[k] !== v) return false;
  }
  return true;
}

/** The signer name cert-manager checks `approve` on for a request to this issuer. */
export function signerName(issuerRef: Request['issuerRef'], namespace: string): string {
  return (issuerRef.kind || 'Issuer') === 'ClusterIssuer'
    ? `clusterissuers.cert-manager.io/${issuerRef.name}`
    : `issuers.cert-manager.io/${namespace}.${issuerRef.name}`;
}

/** RBAC over the given objects: may `requester` do `verb` on `resource` named `name` in `namespace`? */
export function rbacAllows(
  objects: Json[],
  requester: Requester,
  attributes: { apiGroup: string; resource: string; verb: string; name: string; namespace: string },
): boolean {
  const subjectMatches = (s: Json) =>
    (s.kind === 'ServiceAccount' && requester.username === `system:serviceaccount:${s.namespace}:${s.name}`) ||
    (s.kind === 'User' && requester.username === s.name) ||
    (s.kind === 'Group' && requester.groups.includes(s.name));
  const ruleAllows = (r: Json) =>
    (r.apiGroups ?? []).some((g: string) => g === '*' || g === attributes.apiGroup) &&
    (r.resources ?? []).some((x: string) => x === '*' || x === attributes.resource) &&
    (r.verbs ?? []).some((v: string) => v === '*' || v === attributes.verb) &&
    (!r.resourceNames?.length || r.resourceNames.includes(attributes.name));
  return objects
    .filter(
      (b) =>
        b.kind === 'ClusterRoleBinding' || (b.kind === 'RoleBinding' && b.metadata.namespace === attributes.namespace),
    )
    .filter((b) => (b.subjects ?? []).some(subjectMatches))
    .some((b) => {
      const role = objects.find(
        (o) =>
          o.kind === b.roleRef.kind &&
          o.metadata.name === b.roleRef.name &&
          (o.kind === 'ClusterRole' || o.metadata.namespace === b.metadata.namespace),
      );
      return (role?.rules ?? []).some(ruleAllows);
    });
}

/** The policies approver-policy would consider for `request` from `requester`, and which of them allow it. */
export function review(
  policies: Json[],
  rbac: Json[],
  request: Request,
  requester: Requester,
  namespaceLabels: Record<string, string> = {},
): { considered: string[]; allowing: string[] } {
  const considered = policies.filter(
    (p) =>
      selectorMatches(p, request, namespaceLabels) &&
      rbacAllows(rbac, requester, {
        apiGroup: 'policy.cert-manager.io',
        resource: 'certificaterequestpolicies',
        verb: 'use',
        name: p.metadata.name,
        namespace: request.namespace,
      }),
  );
  return {
    considered: considered.map((p) => p.metadata.name),
    allowing: considered.filter((p) => policyDenials(p, request).length === 0).map((p) => p.metadata.name),
  };
}
