// How Envoy's filters call the policy services (ext-authz, rate-limit service): over their
// clusters, retrying on another replica a call that one never took (connection refused,
// stream refused, UNAVAILABLE). Not on a reset: ShouldRateLimit counts, and a call reset
// mid-way may have been counted already. A stopped replica then costs a retry, not a failed
// request, until the health checks take it out of rotation. (GrpcService.retry_policy;
// EnvoyGrpc's own retry_policy is only for xDS streams.)
//
// Envoy turns this core RetryPolicy into a route one whose per-try timeout is the back-off's
// max_interval (Http::Utility::convertCoreToRouteRetryPolicy). So max_interval is the call's
// whole timeout: a short one would cut every slow-but-fine Check into a failure.
import { GrpcService } from '@sekisho/proto/envoy/config/core/v3/grpc_service';
import { durationFromMs } from './duration';

export function policyServiceGrpc(
  clusterName: string,
  timeoutMs: number,
): Pick<GrpcService, 'envoyGrpc' | 'retryPolicy'> {
  const { envoyGrpc, retryPolicy } = GrpcService.fromPartial({
    envoyGrpc: { clusterName },
    retryPolicy: {
      retryOn: 'connect-failure,refused-stream,unavailable',
      numRetries: 2,
      retryBackOff: { baseInterval: durationFromMs(Math.min(5, timeoutMs)), maxInterval: durationFromMs(timeoutMs) },
    },
  });
  return { envoyGrpc, retryPolicy };
}
