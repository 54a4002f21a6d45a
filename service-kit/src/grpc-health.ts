// The standard gRPC health service (grpc.health.v1.Health), which Envoy's gRPC health
// checks call: a replica that is not ready (no policy yet, draining) answers NOT_SERVING, so
// Envoy stops sending it traffic until it is.
import { status as grpcStatus, type ServerWritableStream } from '@grpc/grpc-js';
import {
  type HealthCheckRequest,
  HealthCheckResponse_ServingStatus,
  type HealthServer,
} from '@sekisho/proto/grpc/health/v1/health';

export { HealthService } from '@sekisho/proto/grpc/health/v1/health';

const watchPollMs = 1_000;

/**
 * `isServing` is asked on every call. The empty service name is the whole server; the
 * names in `services` report the same state; any other name is NOT_FOUND, as the protocol says.
 */
export function createHealthServer(opts: { isServing: () => boolean; services?: readonly string[] }): HealthServer {
  const known = new Set(['', ...(opts.services ?? [])]);
  const current = () =>
    opts.isServing() ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.NOT_SERVING;
  return {
    check: (call, callback) => {
      if (!known.has(call.request.service)) {
        callback({ code: grpcStatus.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        return;
      }
      callback(null, { status: current() });
    },
    watch: (call: ServerWritableStream<HealthCheckRequest, unknown>) => {
      // The protocol: send the state now and again whenever it changes, until the client leaves.
      const stateOf = () =>
        known.has(call.request.service) ? current() : HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN;
      let last = stateOf();
      call.write({ status: last });
      const timer = setInterval(() => {
        const next = stateOf();
        if (next !== last) call.write({ status: next });
        last = next;
      }, watchPollMs);
      timer.unref();
      const stop = () => clearInterval(timer);
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    },
  };
}
