// Rate-limit descriptors, defined once: routes.ts turns them into the route's Envoy
// rate-limit actions and policy.ts into the rate-limit service's rule matches, so what
// Envoy sends and what the service expects cannot drift apart.
//
// One descriptor per (family, per), whatever the number of windows: the service applies
// every rule whose match fits the descriptor.
import { descriptorKeys } from '@sekisho/service-kit/contract';
import type { GatewayIR, LimitIR, RouteIR } from '../ir/types';

export type DescriptorEntry =
  /** A constant entry (Envoy generic_key). */
  | { kind: 'constant'; key: string; value: string }
  /** The verified user id that ext-authz put in its identity header. */
  | { kind: 'user' }
  /** Present (value "true") only when there is no verified user. */
  | { kind: 'anonymous' }
  /** "ordinary", except for VIP addresses, whose requests therefore match no rule. */
  | { kind: 'ordinaryClient' }
  /** The client IP Envoy derived from the connection and trusted X-Forwarded-For hops. */
  | { kind: 'remoteAddress' };

/** The client_class value of everyone but the VIP addresses. */
export const ordinaryClientClass = 'ordinary';

export interface Descriptor {
  /** Prefix of the rule ids: "authenticated/user", "route:<id>/ip". */
  family: string;
  entries: DescriptorEntry[];
  limits: LimitIR[];
}

/** Every route carries the global families and its own. */
export function routeDescriptors(ir: GatewayIR, route: RouteIR): Descriptor[] {
  return [...globalDescriptors(ir), ...ownDescriptors(route)];
}

/** The descriptors of the whole gateway, each once, for the rate-limit policy. */
export function allDescriptors(ir: GatewayIR): Descriptor[] {
  return [...globalDescriptors(ir), ...ir.routes.flatMap(ownDescriptors)];
}

function globalDescriptors(ir: GatewayIR): Descriptor[] {
  const out: Descriptor[] = [];
  if (ir.limits.authenticated.length > 0) {
    out.push({
      family: 'authenticated/user',
      entries: [{ kind: 'constant', key: descriptorKeys.limitClass, value: 'authenticated' }, { kind: 'user' }],
      limits: ir.limits.authenticated,
    });
  }
  if (ir.limits.unauthenticated.length > 0) {
    out.push({
      family: 'unauthenticated/ip',
      entries: [
        { kind: 'constant', key: descriptorKeys.limitClass, value: 'unauthenticated' },
        { kind: 'anonymous' },
        // VIP addresses skip the anonymous per-IP limits (the reference design's whitelist).
        ...(ir.ipRules.allow.length > 0 ? [{ kind: 'ordinaryClient' } as const] : []),
        { kind: 'remoteAddress' },
      ],
      limits: ir.limits.unauthenticated,
    });
  }
  return out;
}

function ownDescriptors(route: RouteIR): Descriptor[] {
  return (['user', 'ip'] as const).flatMap((per) => {
    const limits = route.limits.filter((limit) => limit.per === per);
    if (limits.length === 0) return [];
    return [
      {
        family: `route:${route.id}/${per}`,
        entries: [
          { kind: 'constant', key: descriptorKeys.route, value: route.id },
          per === 'user' ? { kind: 'user' } : { kind: 'remoteAddress' },
        ],
        limits,
      } satisfies Descriptor,
    ];
  });
}
