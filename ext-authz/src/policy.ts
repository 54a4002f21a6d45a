import type { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';

// Checks of an AuthzPolicy before it replaces the one in force. A policy that fails
// is NACKed to the control plane (the error message travels in the NACK) and the
// previous one stays.

export class PolicyError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid AuthzPolicy: ${problems.join('; ')}`);
    this.name = 'PolicyError';
  }
}

const token = /^[\x21-\x2b\x2d-\x7e]+$/;

export function validateAuthzPolicy(policy: AuthzPolicy): void {
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
  for (const [group, set] of Object.entries(policy.groups)) {
    // Group names and permissions become header values, and permissions are
    // comma-joined there and in context_extensions: visible ASCII without commas.
    if (!token.test(group)) problems.push(`group ${JSON.stringify(group)} has an invalid name`);
    for (const permission of set.permissions) {
      if (!token.test(permission)) {
        problems.push(`group ${group}: permission ${JSON.stringify(permission)} is invalid`);
      }
    }
  }
  if (policy.defaultGroup !== '' && !Object.hasOwn(policy.groups, policy.defaultGroup)) {
    problems.push(`default_group ${JSON.stringify(policy.defaultGroup)} is not one of the groups`);
  }
  if (problems.length > 0) throw new PolicyError(problems);
}
