// The policy resources of Sekisho's own services: AuthzPolicy for ext-authz (identity and
// groups; route requirements travel in each route's context_extensions) and
// RateLimitPolicy for the rate-limit service (one rule per limit window). With
// perUserLimits: ext-authz the per-user rules go to ext-authz instead, in the same form
// (AuthzPolicy.user_limits), built by the same code.

import {
  AuthzPolicy,
  type DescriptorMatch,
  RateLimitAlgorithm,
  RateLimitPolicy,
  StoreFailureMode,
} from '@sekisho/proto/sekisho/policy/v1/policy';
import { descriptorKeys, rateLimitDomain } from '@sekisho/service-kit/contract';
import type { GatewayIR, LimitIR } from '../ir/types';
import {
  allDescriptors,
  type Descriptor,
  type DescriptorEntry,
  envoyDescriptors,
  ordinaryClientClass,
  userLimitsInExtAuthz,
} from './descriptors';

export function translateAuthzPolicy(ir: GatewayIR): AuthzPolicy {
  return AuthzPolicy.fromPartial({
    firebase: { projectId: ir.identity.firebaseProjectId },
    groupClaim: ir.identity.groupClaim,
    defaultGroup: ir.identity.defaultGroup ?? '',
    groups: Object.fromEntries(ir.identity.groups.map((group) => [group.name, { permissions: group.permissions }])),
    signInProviders: ir.identity.signInProviders ?? [],
    tenants: ir.identity.tenants,
    customerIdClaim: ir.identity.customerIdClaim ?? '',
    ...userLimitsPolicy(ir),
  });
}

/** perUserLimits: ext-authz: the per-user rules, for ext-authz to count in the Check. */
function userLimitsPolicy(ir: GatewayIR): { userLimits?: RateLimitPolicy } {
  if (!userLimitsInExtAuthz(ir)) return {};
  const perUser = allDescriptors(ir).filter((descriptor) => descriptor.userFamily !== undefined);
  return perUser.length === 0 ? {} : { userLimits: limitsPolicy(ir, perUser) };
}

const storeFailureModes = {
  allow: StoreFailureMode.STORE_FAILURE_MODE_ALLOW,
  deny: StoreFailureMode.STORE_FAILURE_MODE_DENY,
  local: StoreFailureMode.STORE_FAILURE_MODE_LOCAL,
} as const;

export function translateRateLimitPolicy(ir: GatewayIR): RateLimitPolicy {
  return limitsPolicy(ir, envoyDescriptors(ir, allDescriptors(ir)));
}

/** The rules of these descriptors, with the definition's failure handling: whoever counts them. */
function limitsPolicy(ir: GatewayIR, descriptors: readonly Descriptor[]): RateLimitPolicy {
  const { redisFailureMode, localReplicas, descriptorLimitOverride } = ir.rateLimit;
  return RateLimitPolicy.fromPartial({
    domain: rateLimitDomain,
    storeFailureMode: redisFailureMode ? storeFailureModes[redisFailureMode] : undefined,
    localReplicas,
    allowDescriptorLimitOverride: descriptorLimitOverride,
    rules: descriptors.flatMap((descriptor) =>
      descriptor.limits.map((limit) => ({
        id: `${descriptor.family}/${limit.windowSeconds}s`,
        match: descriptor.entries.map(descriptorMatch),
        requestsPerWindow: limit.requestsPerWindow,
        windowSeconds: limit.windowSeconds,
        blockSeconds: limit.blockSeconds,
        algorithm: algorithms[limit.algorithm],
        burst: limit.burst,
        shadow: limit.shadow,
      })),
    ),
  });
}

const algorithms: Record<LimitIR['algorithm'], RateLimitAlgorithm> = {
  fixed: RateLimitAlgorithm.FIXED_WINDOW,
  sliding: RateLimitAlgorithm.SLIDING_WINDOW,
  tokenBucket: RateLimitAlgorithm.TOKEN_BUCKET,
};

/** The entry Envoy sends for this action; value '' = counted per distinct value. */
function descriptorMatch(entry: DescriptorEntry): DescriptorMatch {
  switch (entry.kind) {
    case 'constant':
      return { key: entry.key, value: entry.value };
    case 'user':
      return { key: descriptorKeys.user, value: '' };
    case 'anonymous':
    case 'authenticationFailed':
      return { key: descriptorKeys.anonymous, value: 'true' };
    case 'ordinaryClient':
      return { key: descriptorKeys.clientClass, value: ordinaryClientClass };
    case 'remoteAddress':
      return { key: descriptorKeys.remoteAddress, value: '' };
  }
}
