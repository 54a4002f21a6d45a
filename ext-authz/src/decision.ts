import type { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { allIdentityHeaders, authzContextKeys, identityHeaders } from '@sekisho/service-kit/contract';
import type { RejectReason, VerifyResult } from './firebase/verify';

// The authorization decision for one request, as a pure function of the request's
// headers, the route's context_extensions, the current policy and a token verifier.
// It fails closed: no policy, an unreadable route requirement or a token that does not
// verify never lead to an allow.

/** Verifies a Firebase ID token for a project; never throws (see firebase/verify.ts). */
export type VerifyToken = (token: string, projectId: string) => Promise<VerifyResult>;

export interface CheckInput {
  /** Request headers, names lower-case (as Envoy sends them). */
  headers: Readonly<Record<string, string>>;
  contextExtensions: Readonly<Record<string, string>>;
}

export interface RouteRequirements {
  routeId: string | undefined;
  /** False only for routes the control plane marked `sekisho.auth: none`. */
  authRequired: boolean;
  /** Every one of these must be granted. */
  permissions: string[];
}

export interface Identity {
  userId: string;
  email?: string;
  emailVerified?: boolean;
  phoneNumber?: string;
  /** The policy group whose permissions apply; undefined when the caller has none the policy knows. */
  group?: string;
  permissions: readonly string[];
}

export type DenyCode =
  | 'MISSING_TOKEN'
  | 'TOKEN_EXPIRED'
  | 'INVALID_TOKEN'
  | 'INSUFFICIENT_PERMISSIONS'
  | 'SERVICE_UNAVAILABLE';

export type DenyReason = RejectReason | 'no_policy' | 'no_bearer_token' | 'uid_not_header_safe' | 'missing_permissions';

export type Decision =
  | {
      allow: true;
      /** undefined on `auth: none` routes. */
      identity: Identity | undefined;
      /** Identity headers for the upstream, replacing any value already present. */
      headersToSet: Array<[name: string, value: string]>;
      /** Every identity header not set: a client's own copies never reach the service. */
      headersToRemove: string[];
    }
  | {
      allow: false;
      code: DenyCode;
      reason: DenyReason;
      userId?: string;
      group?: string;
      requiredPermissions?: string[];
      missingPermissions?: string[];
    };

export function routeRequirements(contextExtensions: Readonly<Record<string, string>>): RouteRequirements {
  const get = (key: string) => (Object.hasOwn(contextExtensions, key) ? contextExtensions[key] : undefined);
  return {
    routeId: get(authzContextKeys.routeId),
    // Anything but an explicit "none" requires authentication.
    authRequired: get(authzContextKeys.auth) !== 'none',
    permissions: (get(authzContextKeys.permissions) ?? '')
      .split(',')
      .map((permission) => permission.trim())
      .filter((permission) => permission !== ''),
  };
}

export async function decide(
  input: CheckInput,
  policy: AuthzPolicy | undefined,
  verify: VerifyToken,
): Promise<Decision> {
  if (!policy?.firebase?.projectId) return { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'no_policy' };

  const route = routeRequirements(input.contextExtensions);
  if (!route.authRequired) {
    return { allow: true, identity: undefined, headersToSet: [], headersToRemove: [...allIdentityHeaders] };
  }

  const token = bearerToken(header(input.headers, 'authorization'));
  if (token === undefined) return { allow: false, code: 'MISSING_TOKEN', reason: 'no_bearer_token' };

  const verified = await verify(token, policy.firebase.projectId);
  if (!verified.ok) return { allow: false, code: verified.code, reason: verified.reason };
  const { claims } = verified;
  if (!isHeaderSafe(claims.uid)) return { allow: false, code: 'INVALID_TOKEN', reason: 'uid_not_header_safe' };

  const group = groupOf(claims.payload, policy);
  const granted = group === undefined ? [] : (policy.groups[group]?.permissions ?? []);
  const missing = route.permissions.filter((permission) => !granted.includes(permission));
  if (missing.length > 0) {
    return {
      allow: false,
      code: 'INSUFFICIENT_PERMISSIONS',
      reason: 'missing_permissions',
      userId: claims.uid,
      ...(group !== undefined ? { group } : {}),
      requiredPermissions: route.permissions,
      missingPermissions: missing,
    };
  }

  const identity: Identity = {
    userId: claims.uid,
    ...(claims.email !== undefined ? { email: claims.email } : {}),
    ...(claims.emailVerified !== undefined ? { emailVerified: claims.emailVerified } : {}),
    ...(claims.phoneNumber !== undefined ? { phoneNumber: claims.phoneNumber } : {}),
    ...(group !== undefined ? { group } : {}),
    permissions: granted,
  };
  return { allow: true, identity, ...identityHeaderMutations(identity) };
}

/** The caller's group: the policy's group claim when it is a string, else the default group; only groups the policy defines count. */
function groupOf(payload: Readonly<Record<string, unknown>>, policy: AuthzPolicy): string | undefined {
  const claimed =
    policy.groupClaim !== '' && Object.hasOwn(payload, policy.groupClaim) ? payload[policy.groupClaim] : undefined;
  const group = typeof claimed === 'string' && claimed !== '' ? claimed : policy.defaultGroup;
  // hasOwn: a group called "constructor" or "__proto__" must not resolve to Object's members.
  return group !== '' && Object.hasOwn(policy.groups, group) ? group : undefined;
}

function identityHeaderMutations(
  identity: Identity,
): Pick<Extract<Decision, { allow: true }>, 'headersToSet' | 'headersToRemove'> {
  const values: Array<[string, string | undefined]> = [
    [identityHeaders.userId, identity.userId],
    [identityHeaders.email, identity.email],
    [identityHeaders.emailVerified, identity.emailVerified === undefined ? undefined : String(identity.emailVerified)],
    [identityHeaders.phone, identity.phoneNumber],
    [identityHeaders.group, identity.group],
    [identityHeaders.permissions, identity.permissions.join(',')],
  ];
  // A claim that cannot be a header value is left out (and its header removed) rather
  // than making Envoy reject the whole response.
  const headersToSet = values.filter(
    (entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== '' && isHeaderSafe(entry[1]),
  );
  const set = new Set(headersToSet.map(([name]) => name));
  return { headersToSet, headersToRemove: allIdentityHeaders.filter((name) => !set.has(name)) };
}

function header(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  return Object.hasOwn(headers, name) ? headers[name] : undefined;
}

/** `Bearer <token>`, scheme case-insensitive (RFC 7235); anything else is no token. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const match = /^bearer +(\S+) *$/i.exec(authorization ?? '');
  return match?.[1];
}

/** No control characters other than tab: what an HTTP field value may carry. */
function isHeaderSafe(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return false;
  }
  return true;
}
