import type { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';

// An AuthzPolicy is checked and compiled once, when it arrives, into the form every
// Check reads: groups in a Map (no prototype to trip over), permissions in Sets, the
// permissions header value already joined. A policy that fails is NACKed to the control
// plane (the error message travels in the NACK) and the previous one stays.

export class PolicyError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid AuthzPolicy: ${problems.join('; ')}`);
    this.name = 'PolicyError';
  }
}

export interface Group {
  name: string;
  permissions: ReadonlySet<string>;
  /** The permissions in policy order, and comma-joined for the identity header. */
  permissionList: readonly string[];
  permissionHeader: string;
}

export interface CompiledPolicy {
  projectId: string;
  /** Empty: no group claim is read. */
  groupClaim: string;
  groups: ReadonlyMap<string, Group>;
  /** The group of a caller whose token names none. */
  defaultGroup: Group | undefined;
  /** Accepted firebase.sign_in_provider values; undefined = every one but anonymous. */
  signInProviders: ReadonlySet<string> | undefined;
  /** Accepted firebase.tenant values; empty = every tenant token is refused. */
  tenants: ReadonlySet<string>;
  /** The claim with the caller's customer id ("sub": the uid); '' = none, ownership checks refuse. */
  customerIdClaim: string;
}

// Group names and permissions become header values, and permissions are comma-joined
// there and in context_extensions: visible ASCII without commas.
const headerToken = /^[\x21-\x2b\x2d-\x7e]+$/;

// The same shapes the control plane's definition schema accepts.
const signInProviderId = /^[a-z0-9][a-z0-9._-]{0,99}$/;
const tenantId = /^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/;

/** Checks a policy and compiles it; throws a PolicyError naming every problem. */
export function compileAuthzPolicy(policy: AuthzPolicy): CompiledPolicy {
  const problems: string[] = [];
  const projectId = policy.firebase?.projectId ?? '';
  // Google project ids are lower-case letters, digits and hyphens (6–30 of them; kept
  // loose here so short test ids pass); the id becomes part of the expected issuer URL.
  if (projectId === '') problems.push('firebase.project_id is empty');
  else if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(projectId)) {
    problems.push(`firebase.project_id ${JSON.stringify(projectId)} is not a Firebase project id`);
  }
  if (policy.groupClaim !== '' && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(policy.groupClaim)) {
    problems.push(`group_claim ${JSON.stringify(policy.groupClaim)} is not a claim name`);
  }
  // The generated decoder assigns map entries to a plain object, so an entry named
  // __proto__ silently replaces its prototype instead of becoming a group.
  if (Object.getPrototypeOf(policy.groups) !== Object.prototype) problems.push('a group is named "__proto__"');

  const groups = new Map<string, Group>();
  for (const [name, set] of Object.entries(policy.groups)) {
    if (!headerToken.test(name)) problems.push(`group ${JSON.stringify(name)} has an invalid name`);
    for (const permission of set.permissions) {
      if (!headerToken.test(permission)) {
        problems.push(`group ${name}: permission ${JSON.stringify(permission)} is invalid`);
      }
    }
    const permissionList = [...new Set(set.permissions)];
    groups.set(name, {
      name,
      permissions: new Set(permissionList),
      permissionList,
      permissionHeader: permissionList.join(','),
    });
  }
  const defaultGroup = policy.defaultGroup === '' ? undefined : groups.get(policy.defaultGroup);
  if (policy.defaultGroup !== '' && !defaultGroup) {
    problems.push(`default_group ${JSON.stringify(policy.defaultGroup)} is not one of the groups`);
  }
  for (const provider of policy.signInProviders) {
    if (!signInProviderId.test(provider)) problems.push(`sign_in_providers: ${JSON.stringify(provider)} is invalid`);
  }
  for (const tenant of policy.tenants) {
    if (!tenantId.test(tenant)) problems.push(`tenants: ${JSON.stringify(tenant)} is invalid`);
  }
  if (policy.customerIdClaim !== '' && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(policy.customerIdClaim)) {
    problems.push(`customer_id_claim ${JSON.stringify(policy.customerIdClaim)} is not a claim name`);
  }
  if (problems.length > 0) throw new PolicyError(problems);
  return {
    projectId,
    groupClaim: policy.groupClaim,
    groups,
    defaultGroup,
    signInProviders: policy.signInProviders.length > 0 ? new Set(policy.signInProviders) : undefined,
    tenants: new Set(policy.tenants),
    customerIdClaim: policy.customerIdClaim,
  };
}
