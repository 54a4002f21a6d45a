// Rate-limit descriptors, defined once: routes.ts turns them into the route's Envoy
// rate-limit actions and policy.ts into the rate-limit service's rule matches, so what
// Envoy sends and what the service expects cannot drift apart.
//
// One descriptor per (family, per), whatever the number of windows: the service applies
// every rule whose match fits the descriptor.
//
// Per-IP families are decided before authentication (stage "beforeAuth": a ratelimit filter
// ahead of ext_authz), so a flood of requests without a token is refused with 429 before any
// of them costs a signature verification. Per-user families need the verified user id that
// ext-authz adds, so they are decided after it ("afterAuth"), by Envoy's second ratelimit
// filter, or, with policyServices.rateLimit.perUserLimits: ext-authz, by ext-authz itself in
// the Check (the same descriptors, built there from the families in the route's context).
import {
  authzContextKeys,
  descriptorKeys,
  type UserLimitFamily,
  userLimitFamilies,
} from '@sekisho/service-kit/contract';
import type { GatewayIR, LimitIR, RouteIR } from '../ir/types';

export type DescriptorEntry =
  /** A constant entry (Envoy generic_key). */
  | { kind: 'constant'; key: string; value: string }
  /** The verified user id that ext-authz put in its identity header. */
  | { kind: 'user' }
  /**
   * Present (value "true") only for requests that carry no Authorization header: decided
   * before authentication, when no user is verified yet.
   */
  | { kind: 'anonymous' }
  /** "ordinary", except for VIP addresses, whose requests therefore match no rule. */
  | { kind: 'ordinaryClient' }
  /** The client IP Envoy derived from the connection and trusted X-Forwarded-For hops. */
  | { kind: 'remoteAddress' }
  /**
   * Present (value "true", under the anonymous key) only when ext-authz refused the token:
   * read from the ext_authz filter's dynamic metadata when the stream is done.
   */
  | { kind: 'authenticationFailed' };

/** Which ratelimit filter sends the descriptor: the one before ext_authz or the one after it. */
export type DescriptorStage = 'beforeAuth' | 'afterAuth';

/**
 * Envoy's ratelimit filter only sends the route's rate_limits of its own stage. Stage 0
 * (the default, after ext_authz) keeps the per-user families; stage 1 runs before ext_authz.
 */
export const rateLimitStages: Record<DescriptorStage, number> = { afterAuth: 0, beforeAuth: 1 };

/** The client_class value of everyone but the VIP addresses. */
export const ordinaryClientClass = 'ordinary';

export interface Descriptor {
  /** Prefix of the rule ids: "authenticated/user", "route:<id>/ip". */
  family: string;
  stage: DescriptorStage;
  /**
   * Sent when the stream is done rather than before the request goes on: it counts what
   * happened (a refused token) for the requests that follow, and refuses nothing itself.
   */
  onStreamDone?: boolean;
  entries: DescriptorEntry[];
  limits: LimitIR[];
  /** A per-user (afterAuth) descriptor: the family ext-authz builds it from in the Check. */
  userFamily?: UserLimitFamily;
}

/** Every route carries the global families (the same for every route of one `auth`) and its own. */
export function routeDescriptors(ir: GatewayIR, route: RouteIR): Descriptor[] {
  return [...globalDescriptors(ir, route.auth), ...ownDescriptors(route)];
}

/** The descriptors of the whole gateway, each once, for the rate-limit policy. */
export function allDescriptors(ir: GatewayIR): Descriptor[] {
  // A family sent in two shapes (the failed-token count is the anonymous family's) has one set of rules.
  const global = globalDescriptors(ir, 'required').filter((descriptor) => !descriptor.onStreamDone);
  // A mesh service's routes are counted by its sidecar with the same families (mesh route ids contain ":").
  const meshRoutes = ir.mesh?.services.flatMap((service) => service.routes) ?? [];
  return [...global, ...ir.routes.flatMap(ownDescriptors), ...meshRoutes.flatMap(ownDescriptors)];
}

/**
 * On an `auth: optional` route the callers without a token are the anonymous ones, exactly
 * as on a required route (they pass instead of being refused), so the same header-based
 * entry counts them per IP; a made-up Authorization header is refused there by ext-authz.
 * On an `auth: none` route nobody is verified, so every request is anonymous: a constant
 * entry of the same key and value, or a made-up Authorization header would escape the
 * per-IP limits there. Both shapes match the same rule of the rate-limit service.
 */
function anonymousEntry(auth: RouteIR['auth']): DescriptorEntry {
  return auth === 'none' ? { kind: 'constant', key: descriptorKeys.anonymous, value: 'true' } : { kind: 'anonymous' };
}

export function globalDescriptors(ir: GatewayIR, auth: RouteIR['auth']): Descriptor[] {
  const out: Descriptor[] = [];
  // On an optional route a token that fails is refused as on a required one, so it is counted too.
  const failedToken = auth !== 'none' && ir.limits.unauthenticated.length > 0;
  const vip: DescriptorEntry[] = ir.ipRules.allow.length > 0 ? [{ kind: 'ordinaryClient' }] : [];
  if (ir.limits.authenticated.length > 0) {
    out.push({
      family: 'authenticated/user',
      stage: 'afterAuth',
      userFamily: 'authenticated',
      entries: [{ kind: 'constant', key: descriptorKeys.limitClass, value: 'authenticated' }, { kind: 'user' }],
      limits: ir.limits.authenticated,
    });
  }
  if (ir.limits.unauthenticated.length > 0) {
    out.push({
      family: 'unauthenticated/ip',
      stage: 'beforeAuth',
      entries: [
        { kind: 'constant', key: descriptorKeys.limitClass, value: 'unauthenticated' },
        anonymousEntry(auth),
        // VIP addresses skip the anonymous per-IP limits (the reference design's whitelist).
        ...vip,
        { kind: 'remoteAddress' },
      ],
      limits: ir.limits.unauthenticated,
    });
  }
  if (failedToken) {
    // A request whose token failed verification is counted per IP like one without a token
    // (the same rules: the same entries), once ext-authz has said so. It cannot be counted
    // before authentication: until then it is a request with a token like any user's.
    out.push({
      family: 'unauthenticated/ip',
      stage: 'beforeAuth',
      onStreamDone: true,
      entries: [
        { kind: 'constant', key: descriptorKeys.limitClass, value: 'unauthenticated' },
        { kind: 'authenticationFailed' },
        // VIP addresses skip the anonymous per-IP limits (the reference design's whitelist).
        ...vip,
        { kind: 'remoteAddress' },
      ],
      limits: ir.limits.unauthenticated,
    });
  }
  return out;
}

/** A route's own limits: an ingress route's, or a mesh service's route's in its sidecar. */
export function ownDescriptors(route: Pick<RouteIR, 'id' | 'limits'>): Descriptor[] {
  return (['user', 'ip'] as const).flatMap((per) => {
    const limits = route.limits.filter((limit) => limit.per === per);
    if (limits.length === 0) return [];
    return [
      {
        family: `route:${route.id}/${per}`,
        stage: per === 'user' ? 'afterAuth' : 'beforeAuth',
        ...(per === 'user' ? { userFamily: 'route' as const } : {}),
        entries: [
          { kind: 'constant', key: descriptorKeys.route, value: route.id },
          per === 'user' ? { kind: 'user' } : { kind: 'remoteAddress' },
        ],
        limits,
      } satisfies Descriptor,
    ];
  });
}

/** ext-authz counts the per-user families in its Check; Envoy then has no afterAuth descriptor. */
export function userLimitsInExtAuthz(ir: GatewayIR): boolean {
  return ir.rateLimit.perUserLimits === 'ext-authz';
}

/** The descriptors Envoy sends the rate-limit service: all, or the per-IP ones when ext-authz counts the rest. */
export function envoyDescriptors(ir: GatewayIR, descriptors: readonly Descriptor[]): Descriptor[] {
  return userLimitsInExtAuthz(ir) ? descriptors.filter((d) => d.userFamily === undefined) : [...descriptors];
}

/**
 * The route context's `sekisho.user_limits` when ext-authz counts the per-user families: the
 * families among these descriptors, in userLimitFamilies' order; empty when Envoy counts them,
 * or on an `auth: none` route (nobody is verified there, so no per-user count ever applies).
 */
export function userLimitContext(
  ir: GatewayIR,
  auth: RouteIR['auth'] | 'mesh',
  descriptors: readonly Descriptor[],
): Record<string, string> {
  if (!userLimitsInExtAuthz(ir) || auth === 'none') return {};
  const present = new Set(descriptors.map((d) => d.userFamily));
  const families = userLimitFamilies.filter((family) => present.has(family));
  return families.length === 0 ? {} : { [authzContextKeys.userLimits]: families.join(',') };
}
