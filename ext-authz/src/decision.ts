import {
  allIdentityHeaders,
  authzContextKeys,
  dryRunDeniedHeader,
  identityHeaders,
  sekishoHeaderPrefix,
  type UserLimitFamily,
  userLimitFamilies,
} from '@sekisho/service-kit/contract';
import { deviceIdHeader } from '@sekisho/service-kit/threat-contract';
import { type AccountEntry, type AccountView, accountRefusal } from './accounts/state';
import type { FirebaseClaims, RejectReason, VerifyResult } from './firebase/verify';
import type { CompiledPolicy, Group } from './policy';
import { type AuthProof, additionalAuthRefusal, type ThreatRefusal, type ThreatView } from './threats/state';

// The authorization decision for one request, as a pure function of the request's
// headers, the route's requirements, the compiled policy and a token verifier.
// It fails closed: no policy, an unreadable route requirement or a token that does not
// verify never lead to an allow.

/**
 * Verifies a Firebase ID token for a project; never throws (see firebase/verify.ts). A result
 * without a promise when the key is at hand (the hot path); a promise when it had to wait.
 */
export type VerifyToken = (token: string, projectId: string) => VerifyResult | Promise<VerifyResult>;

export interface CheckInput {
  /** Request headers, names lower-case (as Envoy sends them). */
  headers: Readonly<Record<string, string>>;
  /** What Envoy's header map holds: entries (pseudo-headers included) and their bytes. */
  headerSize?: HeaderSize;
  /** The request path with its query, as Envoy normalised it; default: the `:path` header. */
  path?: string;
  route: RouteRequirements;
  /** The client address Envoy derived: a threat block on it is refused before anything else. */
  clientIp?: string;
  /** When the request is decided (threat blocks expire against it); default Date.now(). */
  nowMs?: number;
  /**
   * The calling workload's identity as Envoy verified it (attributes.source.principal: the
   * peer certificate's URI SAN); only a sidecar's mesh inbound check reads it.
   */
  peerPrincipal?: string;
}

export interface HeaderSize {
  count: number;
  bytes: number;
}

export interface RouteRequirements {
  routeId: string | undefined;
  /**
   * `none` and `optional` only when the control plane wrote exactly that in `sekisho.auth`;
   * any other value (or none) is `required`.
   */
  auth: RouteAuth;
  /** Every one of these must be granted. */
  permissions: readonly string[];
  /** What must equal the caller's customer id; undefined = no ownership check. */
  owner: OwnerRequirement | undefined;
  /** Decide and report a verified caller's denial, but allow (`sekisho.dry_run` = "true"). */
  dryRun: boolean;
  /** Envoy's header limits, which it checks again after applying our headers. */
  headerLimits: HeaderSize | undefined;
  /** Set on a sidecar's inbound routes only: decided on the peer and the forwarded end user. */
  mesh: MeshInbound | undefined;
  /**
   * The per-user limit families Check counts for the verified user (perUserLimits: ext-authz);
   * empty = none here (Envoy's ratelimit filter counts them, or the route has none).
   */
  userLimits: readonly UserLimitFamily[];
}

export interface MeshInbound {
  /** The caller must be a workload of this trust domain (spiffe://<trustDomain>/...). */
  trustDomain: string;
  /** `spiffe://<trustDomain>/`, made once per route's context (a Check only compares). */
  principalPrefix: string;
  /** How long a request that entered at the ingress may still be under way. */
  chainSeconds: number;
}

/**
 * A path segment (index into the path split at "/") or a query parameter; `unreadable` when
 * the control plane wrote something else, which refuses every request (fail closed).
 */
export type OwnerRequirement =
  | { kind: 'pathSegment'; index: number }
  | { kind: 'query'; name: string }
  | { kind: 'unreadable' };

/** none: nobody is verified; optional: a token is verified when sent, no token passes anonymously. */
export type RouteAuth = 'required' | 'optional' | 'none';

export interface Identity {
  userId: string;
  email?: string;
  emailVerified?: boolean;
  phoneNumber?: string;
  /** The policy group whose permissions apply; undefined when the caller has none the policy knows. */
  group?: Group;
  /** The token's auth_time (seconds) and second factor: the detector's sign-in facts. */
  authTimeS?: number;
  secondFactor?: string;
}

export type DenyCode =
  | 'MISSING_TOKEN'
  | 'TOKEN_EXPIRED'
  | 'INVALID_TOKEN'
  | 'USER_INACTIVE'
  | 'TOKEN_REVOKED'
  | 'INSUFFICIENT_PERMISSIONS'
  | 'REQUEST_HEADERS_TOO_LARGE'
  | 'SERVICE_UNAVAILABLE'
  | 'IP_BLOCKED'
  | 'USER_BLOCKED'
  | 'RATE_LIMIT_EXCEEDED'
  | 'ADDITIONAL_AUTH_REQUIRED';

export type DenyReason =
  | RejectReason
  | ThreatRefusal['reason']
  | 'no_policy'
  | 'accounts_not_loaded'
  | 'account_disabled'
  | 'token_revoked'
  | 'no_bearer_token'
  | 'uid_not_header_safe'
  | 'sign_in_provider_missing'
  | 'sign_in_provider_not_allowed'
  | 'tenant_not_allowed'
  | 'missing_permissions'
  | 'owner_unreadable'
  | 'no_customer_id'
  | 'owner_value_missing'
  | 'not_owner'
  | 'headers_over_limit'
  | 'no_peer_identity'
  | 'peer_not_in_trust_domain'
  | 'no_forwarded_user'
  | 'signed_out_during_chain';

export interface Denial {
  allow: false;
  code: DenyCode;
  reason: DenyReason;
  userId?: string;
  group?: string;
  requiredPermissions?: readonly string[];
  missingPermissions?: string[];
  /** A threat detector's block: the rule and severity for the security log. */
  threat?: { rule: string; severity: string; untilMs: number };
  /** RATE_LIMIT_EXCEEDED: seconds until the aggressive limit's window starts again. */
  retryAfterSeconds?: number;
}

export type Decision =
  | {
      allow: true;
      /** undefined on `auth: none` routes and for anonymous callers of `auth: optional` ones. */
      identity: Identity | undefined;
      /** On a dry-run route: the denial the policy would have answered (logged and counted as one). */
      dryRunDenied?: Denial;
      /**
       * The first use here of a token issued at sign-in (not by a refresh): the reference's
       * `login` event. Once per token per replica while the verified-token cache keeps it.
       */
      signIn?: { provider: string };
      /** Identity headers for the upstream, replacing any value already present. */
      headersToSet: Array<[name: string, value: string]>;
      /** Every Sekisho header not set: a client's own copies never reach the service. */
      headersToRemove: string[];
    }
  | Denial;

/** Reads the route's requirements from the context_extensions the control plane put in the route. */
export function routeRequirements(contextExtensions: Readonly<Record<string, string>>): RouteRequirements {
  const get = (key: string) => (Object.hasOwn(contextExtensions, key) ? contextExtensions[key] : undefined);
  return {
    routeId: get(authzContextKeys.routeId),
    auth: routeAuth(get(authzContextKeys.auth)),
    permissions: (get(authzContextKeys.permissions) ?? '')
      .split(',')
      .map((permission) => permission.trim())
      .filter((permission) => permission !== ''),
    owner: ownerRequirement(get(authzContextKeys.ownerPathSegment), get(authzContextKeys.ownerQuery)),
    // Only exactly "true": anything else enforces.
    dryRun: get(authzContextKeys.dryRun) === 'true',
    headerLimits: headerLimits(get(authzContextKeys.maxRequestHeaders), get(authzContextKeys.maxRequestHeaderBytes)),
    mesh: meshInbound(get(authzContextKeys.meshTrustDomain), get(authzContextKeys.meshChainSeconds)),
    userLimits: userLimitsOf(get(authzContextKeys.userLimits)),
  };
}

/** The families named, each once, in their canonical order; an unknown name counts nothing. */
function userLimitsOf(value: string | undefined): UserLimitFamily[] {
  if (value === undefined || value === '') return [];
  const named = new Set(value.split(',').map((family) => family.trim()));
  return userLimitFamilies.filter((family) => named.has(family));
}

/** Present (even empty) = a mesh inbound check; an empty trust domain then matches no peer. */
function meshInbound(trustDomain: string | undefined, chainSeconds: string | undefined): MeshInbound | undefined {
  if (trustDomain === undefined) return undefined;
  const seconds = chainSeconds !== undefined && /^\d{1,6}$/.test(chainSeconds) ? Number(chainSeconds) : undefined;
  // Unreadable: the ingress's default request timeout, so a fresh sign-out is still refused.
  return { trustDomain, principalPrefix: `spiffe://${trustDomain}/`, chainSeconds: seconds ?? 60 };
}

function ownerRequirement(segment: string | undefined, query: string | undefined): OwnerRequirement | undefined {
  if (segment === undefined && query === undefined) return undefined;
  if (segment !== undefined && query === undefined && /^[1-9]\d{0,2}$/.test(segment)) {
    return { kind: 'pathSegment', index: Number(segment) };
  }
  if (query !== undefined && segment === undefined && query !== '') return { kind: 'query', name: query };
  return { kind: 'unreadable' };
}

// Anything but exactly "none" or "optional" requires authentication.
function routeAuth(value: string | undefined): RouteAuth {
  return value === 'none' || value === 'optional' ? value : 'required';
}

function headerLimits(count: string | undefined, bytes: string | undefined): HeaderSize | undefined {
  const parse = (text: string | undefined) => (text !== undefined && /^\d{1,9}$/.test(text) ? Number(text) : undefined);
  const [maxCount, maxBytes] = [parse(count), parse(bytes)];
  return maxCount === undefined || maxBytes === undefined ? undefined : { count: maxCount, bytes: maxBytes };
}

/**
 * Whether setting these headers would pass Envoy's limits. Envoy checks them again after
 * ext_authz applied its answer and then sends an empty 500, so the request is refused with
 * 431 here instead. Counted as if every header were new (at most one entry too many).
 */
function overHeaderLimits(input: CheckInput, headersToSet: ReadonlyArray<readonly [string, string]>): boolean {
  const limits = input.route.headerLimits;
  if (limits === undefined || input.headerSize === undefined) return false;
  const addedBytes = headersToSet.reduce((sum, [name, value]) => sum + name.length + Buffer.byteLength(value), 0);
  return (
    input.headerSize.count + headersToSet.length > limits.count || input.headerSize.bytes + addedBytes > limits.bytes
  );
}

/**
 * `accounts`: the replica's copy of the account state (disabled, revoked, overrides), or
 * undefined when the feature is off (no Redis configured). Until it was first loaded every
 * authenticated request is refused with 503: a disabled user must not slip through a restart.
 */
export function decide(
  input: CheckInput,
  policy: CompiledPolicy | undefined,
  verify: VerifyToken,
  accounts?: AccountView,
  threats?: ThreatView,
): Decision | Promise<Decision> {
  if (!policy) return { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'no_policy' };
  const nowMs = input.nowMs ?? Date.now();
  if (input.route.mesh !== undefined)
    return decideMeshInbound(input, input.route.mesh, policy, nowMs, accounts, threats);
  // Before any token work, on every route: a blocked attacker costs no signature verification.
  const ipBlock = threats?.ipRefusal(input.clientIp, nowMs);
  if (ipBlock !== undefined) return threatDenial(ipBlock);

  const { route } = input;
  const authorization = header(input.headers, 'authorization');
  // An optional route lets a caller without any Authorization header through as on a none
  // route; one that sends a header is decided as on a required route, so a bad token is
  // refused rather than ignored (and counted per IP as a failed token).
  if (route.auth === 'none' || (route.auth === 'optional' && authorization === undefined)) {
    // Envoy checks its limits after any OK answer, so even one that adds nothing.
    if (overHeaderLimits(input, [])) {
      return { allow: false, code: 'REQUEST_HEADERS_TOO_LARGE', reason: 'headers_over_limit' };
    }
    return { allow: true, identity: undefined, headersToSet: [], headersToRemove: headersToRemove(input.headers, []) };
  }

  const token = bearerToken(authorization);
  if (token === undefined) return { allow: false, code: 'MISSING_TOKEN', reason: 'no_bearer_token' };
  if (accounts !== undefined && !accounts.loaded) {
    return { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'accounts_not_loaded' };
  }

  // Synchronous unless the verifier had to wait for keys: no promise on the hot path.
  const verified = verify(token, policy.projectId);
  return verified instanceof Promise
    ? verified.then((result) => decideVerified(input, result, policy, nowMs, accounts, threats))
    : decideVerified(input, verified, policy, nowMs, accounts, threats);
}

/** The rest of a token-bearing request's decision, once its token was verified (or not). */
function decideVerified(
  input: CheckInput,
  verified: VerifyResult,
  policy: CompiledPolicy,
  nowMs: number,
  accounts: AccountView | undefined,
  threats: ThreatView | undefined,
): Decision {
  const { route } = input;
  if (!verified.ok) return { allow: false, code: verified.code, reason: verified.reason };
  const { claims } = verified;
  if (!isHeaderSafe(claims.uid)) return { allow: false, code: 'INVALID_TOKEN', reason: 'uid_not_header_safe' };
  // Never dry-run: a disabled or signed-out user is refused on every route.
  const account = accounts?.get(claims.uid);
  const inactive = accountRefusal(account, claims.payload);
  if (inactive !== undefined) return { allow: false, ...inactive, userId: claims.uid };
  // Never dry-run either: the detector saw this user's traffic, whatever the route.
  const userBlock = threats?.userRefusal(claims.uid, nowMs);
  if (userBlock !== undefined) return { ...threatDenial(userBlock), userId: claims.uid };
  const authTimeS = typeof claims.payload.auth_time === 'number' ? claims.payload.auth_time : undefined;
  const secondFactor = secondFactorOf(claims.payload);
  // The proof is read only for a user under a state (nearly nobody): no work per Check otherwise.
  const authState = threats?.authState(claims.uid, nowMs);
  const authRefused =
    authState && additionalAuthRefusal(authState, authProof(input, authTimeS, secondFactor !== undefined));
  if (authRefused !== undefined) return { ...threatDenial(authRefused), userId: claims.uid };
  const group = groupOf(claims.payload, policy, account);
  const refusal = policyRefusal(input, claims, group, policy, account);
  // Dry-run: a verified caller the policy would refuse is let through, marked for the
  // upstream. A missing or failed token is never let through: nobody would be verified.
  if (refusal !== undefined && !(route.dryRun && dryRunnable.has(refusal.reason))) return refusal;

  // Built field by field: no temporary object per optional claim on the hot path.
  const identity: Identity = { userId: claims.uid };
  if (claims.email !== undefined) identity.email = claims.email;
  if (claims.emailVerified !== undefined) identity.emailVerified = claims.emailVerified;
  if (claims.phoneNumber !== undefined) identity.phoneNumber = claims.phoneNumber;
  if (group) identity.group = group;
  if (authTimeS !== undefined) identity.authTimeS = authTimeS;
  if (secondFactor !== undefined) identity.secondFactor = secondFactor;
  const headersToSet = identityHeaderValues(identity);
  if (refusal !== undefined) headersToSet.push([dryRunDeniedHeader, refusal.code]);
  if (overHeaderLimits(input, headersToSet)) {
    return { allow: false, code: 'REQUEST_HEADERS_TOO_LARGE', reason: 'headers_over_limit', userId: claims.uid };
  }
  const signIn = verified.cached ? undefined : signInEvent(claims.payload);
  const allowed: Decision & { allow: true } = {
    allow: true,
    identity,
    headersToSet,
    headersToRemove: headersToRemove(input.headers, headersToSet),
  };
  if (refusal !== undefined) allowed.dryRunDenied = refusal;
  if (signIn !== undefined) allowed.signIn = signIn;
  return allowed;
}

/**
 * A sidecar's inbound check. The caller is a workload whose certificate Envoy verified and
 * RBAC allowed; the end user is the one the ingress verified and the caller forwards in the
 * identity headers (no token travels in the mesh: the ingress strips Authorization). What a
 * user's request meets at the ingress after the token is applied again, against today's state:
 * the account (disabled; signed out everywhere while the chain may still be under way), the
 * threat detector's blocks, and the route's permissions, recomputed from the forwarded group
 * with this policy (a forwarded permission list is never believed). The identity headers are
 * then set to exactly what was decided, and every other Sekisho header removed.
 */
function decideMeshInbound(
  input: CheckInput,
  mesh: MeshInbound,
  policy: CompiledPolicy,
  nowMs: number,
  accounts: AccountView | undefined,
  threats: ThreatView | undefined,
): Decision {
  const peer = input.peerPrincipal ?? '';
  if (peer === '') return { allow: false, code: 'INSUFFICIENT_PERMISSIONS', reason: 'no_peer_identity' };
  const prefix = mesh.principalPrefix;
  if (mesh.trustDomain === '' || !peer.startsWith(prefix) || peer.length === prefix.length) {
    return { allow: false, code: 'INSUFFICIENT_PERMISSIONS', reason: 'peer_not_in_trust_domain' };
  }
  const ipBlock = threats?.ipRefusal(input.clientIp, nowMs);
  if (ipBlock !== undefined) return threatDenial(ipBlock);

  const { route } = input;
  const userId = header(input.headers, identityHeaders.userId);
  if (userId === undefined || userId === '') {
    // A workload's own call (no end user): fine where the route needs no permission.
    if (route.permissions.length > 0) return { allow: false, code: 'MISSING_TOKEN', reason: 'no_forwarded_user' };
    if (overHeaderLimits(input, [])) {
      return { allow: false, code: 'REQUEST_HEADERS_TOO_LARGE', reason: 'headers_over_limit' };
    }
    return { allow: true, identity: undefined, headersToSet: [], headersToRemove: headersToRemove(input.headers, []) };
  }
  if (accounts !== undefined && !accounts.loaded) {
    return { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'accounts_not_loaded', userId };
  }
  const account = accounts?.get(userId);
  if (account?.disabled) return { allow: false, code: 'USER_INACTIVE', reason: 'account_disabled', userId };
  // No token here to compare its auth_time with: a request that entered at the ingress after
  // the sign-out had a newer token, but one under way since before it cannot be told apart.
  if (account?.validAfter !== undefined && account.validAfter * 1000 > nowMs - mesh.chainSeconds * 1000) {
    return { allow: false, code: 'TOKEN_REVOKED', reason: 'signed_out_during_chain', userId };
  }
  const userBlock = threats?.userRefusal(userId, nowMs);
  if (userBlock !== undefined) return { ...threatDenial(userBlock), userId };

  // The group as the ingress decided it, unless an operator's override says otherwise now.
  const groupName = account?.group ?? header(input.headers, identityHeaders.group);
  const group = groupName === undefined ? undefined : policy.groups.get(groupName);
  const missing = route.permissions.filter((permission) => !group?.permissions.has(permission));
  if (missing.length > 0) {
    return {
      allow: false,
      code: 'INSUFFICIENT_PERMISSIONS',
      reason: 'missing_permissions',
      userId,
      ...(group ? { group: group.name } : {}),
      requiredPermissions: route.permissions,
      missingPermissions: missing,
    };
  }
  const email = header(input.headers, identityHeaders.email);
  const emailVerified = header(input.headers, identityHeaders.emailVerified);
  const phoneNumber = header(input.headers, identityHeaders.phone);
  const identity: Identity = {
    userId,
    ...(email !== undefined ? { email } : {}),
    ...(emailVerified === 'true' || emailVerified === 'false' ? { emailVerified: emailVerified === 'true' } : {}),
    ...(phoneNumber !== undefined ? { phoneNumber } : {}),
    ...(group ? { group } : {}),
  };
  const headersToSet = identityHeaderValues(identity);
  if (overHeaderLimits(input, headersToSet)) {
    return { allow: false, code: 'REQUEST_HEADERS_TOO_LARGE', reason: 'headers_over_limit', userId };
  }
  return {
    allow: true,
    identity,
    headersToSet,
    headersToRemove: headersToRemove(input.headers, headersToSet),
  };
}

function threatDenial(refusal: ThreatRefusal): Denial {
  const { block } = refusal;
  return {
    allow: false,
    code: refusal.code,
    reason: refusal.reason,
    threat: { rule: block.rule, severity: block.severity, untilMs: block.untilMs },
    ...(refusal.code === 'RATE_LIMIT_EXCEEDED' ? { retryAfterSeconds: refusal.retryAfterSeconds } : {}),
  };
}

/** What the token and the request show against a geo anomaly's additional-authentication state. */
function authProof(input: CheckInput, authTimeS: number | undefined, secondFactor: boolean): AuthProof {
  return { authTimeS: authTimeS ?? 0, secondFactor, deviceId: header(input.headers, deviceIdHeader) };
}

/** firebase.sign_in_second_factor ("phone", "totp"), which Firebase sets on an MFA sign-in. */
export function secondFactorOf(payload: Readonly<Record<string, unknown>>): string | undefined {
  const firebase = payload.firebase;
  if (typeof firebase !== 'object' || firebase === null) return undefined;
  const factor = (firebase as Record<string, unknown>).sign_in_second_factor;
  return typeof factor === 'string' && factor !== '' ? factor : undefined;
}

/**
 * The refusals a dry-run lets through: rules about a caller whose uid means what it says.
 * A tenant's token (its uid is another user pool's; it could equal a project user's) and a
 * token without Firebase's sign-in claims are refused all the same.
 */
const dryRunnable: ReadonlySet<DenyReason> = new Set<DenyReason>([
  'sign_in_provider_not_allowed',
  'missing_permissions',
  'owner_unreadable',
  'no_customer_id',
  'owner_value_missing',
  'not_owner',
]);

/**
 * Firebase sets iat = auth_time in the token it issues at sign-in; a refreshed token keeps
 * auth_time and gets a later iat. A minute of slack covers the issuing service's own clock.
 */
function signInEvent(payload: Readonly<Record<string, unknown>>): { provider: string } | undefined {
  const { iat, auth_time: authTime, firebase } = payload;
  if (typeof iat !== 'number' || typeof authTime !== 'number' || iat - authTime >= 60) return undefined;
  const provider = (firebase as Record<string, unknown> | undefined)?.sign_in_provider;
  return { provider: typeof provider === 'string' ? provider : '' };
}

/**
 * What the gateway's policy says about a verified caller, in order: how it signed in, the
 * route's permissions, ownership. undefined = allowed.
 */
function policyRefusal(
  input: CheckInput,
  claims: FirebaseClaims,
  group: Group | undefined,
  policy: CompiledPolicy,
  account: AccountEntry | undefined,
): Denial | undefined {
  const signIn = signInRefusal(claims.payload, policy);
  if (signIn !== undefined) return { allow: false, code: 'INVALID_TOKEN', reason: signIn, userId: claims.uid };

  const { permissions } = input.route;
  const missing = permissions.filter((permission) => !group?.permissions.has(permission));
  if (missing.length > 0) {
    return {
      allow: false,
      code: 'INSUFFICIENT_PERMISSIONS',
      reason: 'missing_permissions',
      userId: claims.uid,
      ...(group ? { group: group.name } : {}),
      requiredPermissions: permissions,
      missingPermissions: missing,
    };
  }

  const notOwner = ownerRefusal(input, claims, policy, account);
  if (notOwner !== undefined) {
    return {
      allow: false,
      code: 'INSUFFICIENT_PERMISSIONS',
      reason: notOwner,
      userId: claims.uid,
      ...(group ? { group: group.name } : {}),
    };
  }
  return undefined;
}

/**
 * Ownership: the route's path segment or query parameter must equal the caller's customer
 * id. The path is Envoy's, normalised before any filter ran (and before a rewrite), so the
 * segment is where the route's template put its variable. A query parameter given twice is
 * refused: the service might read the other one.
 */
function ownerRefusal(
  input: CheckInput,
  claims: FirebaseClaims,
  policy: CompiledPolicy,
  account: AccountEntry | undefined,
): DenyReason | undefined {
  const owner = input.route.owner;
  if (owner === undefined) return undefined;
  if (owner.kind === 'unreadable') return 'owner_unreadable';
  const claim = policy.customerIdClaim;
  // An operator's override (admin set-customer-id) counts before the token's claim catches up.
  const customerId =
    claim === ''
      ? undefined
      : account?.customerId !== undefined && claim !== 'sub'
        ? account.customerId
        : claim === 'sub'
          ? claims.uid
          : Object.hasOwn(claims.payload, claim)
            ? claims.payload[claim]
            : undefined;
  if (typeof customerId !== 'string' || customerId === '') return 'no_customer_id';
  const path = input.path ?? header(input.headers, ':path') ?? '';
  const value = owner.kind === 'pathSegment' ? pathSegment(path, owner.index) : queryParameter(path, owner.name);
  if (value === undefined || value === '') return 'owner_value_missing';
  return value === customerId ? undefined : 'not_owner';
}

function pathSegment(path: string, index: number): string | undefined {
  const end = path.search(/[?#]/);
  const segment = (end === -1 ? path : path.slice(0, end)).split('/', index + 1)[index];
  if (segment === undefined || !segment.includes('%')) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

function queryParameter(path: string, name: string): string | undefined {
  const start = path.indexOf('?');
  if (start === -1) return undefined;
  const end = path.indexOf('#', start);
  const values = new URLSearchParams(path.slice(start + 1, end === -1 ? undefined : end)).getAll(name);
  return values.length === 1 ? values[0] : undefined;
}

/**
 * Whether the gateway accepts how the caller signed in (`firebase.sign_in_provider`, which
 * every Firebase ID token carries; anonymous users are refused unless listed) and for which
 * tenant (`firebase.tenant`: Identity Platform tenants share the project's issuer and
 * audience, so without this check any tenant's users would pass as the project's).
 */
function signInRefusal(payload: Readonly<Record<string, unknown>>, policy: CompiledPolicy): DenyReason | undefined {
  const firebase = payload.firebase;
  if (typeof firebase !== 'object' || firebase === null || Array.isArray(firebase)) return 'sign_in_provider_missing';
  const { sign_in_provider: provider, tenant } = firebase as Record<string, unknown>;
  if (typeof provider !== 'string' || provider === '') return 'sign_in_provider_missing';
  if (policy.signInProviders ? !policy.signInProviders.has(provider) : provider === 'anonymous') {
    return 'sign_in_provider_not_allowed';
  }
  if (tenant !== undefined && (typeof tenant !== 'string' || !policy.tenants.has(tenant))) return 'tenant_not_allowed';
  return undefined;
}

/**
 * The caller's group. The default group applies only when the token has no group claim at
 * all; a claim that is present must be the name of a group the policy defines, and anything
 * else (an unknown name, '', an array, an object, a number, null) means no group, never the
 * default: a token minted with a malformed claim must not quietly gain the default's rights.
 */
function groupOf(
  payload: Readonly<Record<string, unknown>>,
  policy: CompiledPolicy,
  account: AccountEntry | undefined,
): Group | undefined {
  // An operator's override (admin set-group) is held to the same rule as the claim.
  if (account?.group !== undefined) return policy.groups.get(account.group);
  if (policy.groupClaim === '' || !Object.hasOwn(payload, policy.groupClaim)) return policy.defaultGroup;
  const claimed = payload[policy.groupClaim];
  return typeof claimed === 'string' ? policy.groups.get(claimed) : undefined;
}

// A claim that cannot be a header value is left out (and its header removed) rather
// than making Envoy reject the whole response. Group names and permissions were
// checked when the policy was compiled.
function identityHeaderValues(identity: Identity): Array<[string, string]> {
  const set: Array<[string, string]> = [[identityHeaders.userId, identity.userId]];
  if (claimFits(identity.email)) set.push([identityHeaders.email, identity.email]);
  if (identity.emailVerified !== undefined) set.push([identityHeaders.emailVerified, String(identity.emailVerified)]);
  if (claimFits(identity.phoneNumber)) set.push([identityHeaders.phone, identity.phoneNumber]);
  if (identity.group) {
    set.push([identityHeaders.group, identity.group.name]);
    if (identity.group.permissionHeader !== '')
      set.push([identityHeaders.permissions, identity.group.permissionHeader]);
  }
  return set;
}

function claimFits(value: string | undefined): value is string {
  return value !== undefined && value !== '' && isHeaderSafe(value);
}

/**
 * Every identity header not being set, plus any other `x-sekisho-` header the client
 * sent: the upstream trusts that prefix, so only ext-authz may write it.
 */
function headersToRemove(
  headers: Readonly<Record<string, string>>,
  set: ReadonlyArray<readonly [string, string]>,
): string[] {
  const remove: string[] = [];
  for (const name of allIdentityHeaders) if (!isSetIn(set, name)) remove.push(name);
  for (const name in headers) {
    if (name.startsWith(sekishoHeaderPrefix) && !isSetIn(set, name) && !remove.includes(name)) remove.push(name);
  }
  return remove;
}

function isSetIn(set: ReadonlyArray<readonly [string, string]>, name: string): boolean {
  for (const [setName] of set) if (setName === name) return true;
  return false;
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
