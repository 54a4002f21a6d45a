import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { RateLimitRequest } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authzContextKeys, descriptorKeys, rateLimitDomain } from '@sekisho/service-kit/contract';

// The policies and requests the single-service benchmarks send, defined once
// (bench:ratelimit builds its own, with several routes).

/** The Firebase project of every benchmark's tokens. */
export const benchProjectId = 'sekisho-bench';

/** ext-authz's policy: every verified user is a customer who may read their profile. */
export const benchAuthzPolicy = AuthzPolicy.fromPartial({
  firebase: { projectId: benchProjectId },
  groupClaim: 'tier',
  defaultGroup: 'customer',
  groups: { customer: { permissions: ['read:own_profile'] } },
});

/** A Check of `GET /api/v1/customer/profile` with a bearer token, as Envoy sends it. */
export function benchCheckRequest(bearer: string, requestId = 'bench'): CheckRequest {
  return CheckRequest.fromPartial({
    attributes: {
      source: { address: { socketAddress: { address: '203.0.113.7', portValue: 40000 } } },
      contextExtensions: {
        [authzContextKeys.routeId]: 'profile',
        [authzContextKeys.permissions]: 'read:own_profile',
      },
      request: {
        http: {
          method: 'GET',
          path: '/api/v1/customer/profile',
          host: 'api.example.com',
          headers: { 'x-request-id': requestId, authorization: `Bearer ${bearer}` },
        },
      },
    },
  });
}

/** One per-user rule on `route`, far above what a run sends: every call is a full decision. */
export function benchRateLimitPolicy(route: string): RateLimitPolicy {
  return RateLimitPolicy.fromPartial({
    domain: rateLimitDomain,
    rules: [
      {
        id: `route:${route}/user/60s`,
        match: [
          { key: descriptorKeys.route, value: route },
          { key: descriptorKeys.user, value: '' },
        ],
        requestsPerWindow: 1_000_000_000,
        windowSeconds: 60,
      },
    ],
  });
}

/** The one descriptor that rule counts: `route` and `user`. */
export function benchRateLimitRequest(route: string, user: string): RateLimitRequest {
  return RateLimitRequest.fromPartial({
    domain: rateLimitDomain,
    hitsAddend: 1,
    descriptors: [
      {
        entries: [
          { key: descriptorKeys.route, value: route },
          { key: descriptorKeys.user, value: user },
        ],
      },
    ],
  });
}
