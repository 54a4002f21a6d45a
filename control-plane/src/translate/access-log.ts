// The ingress access log: one JSON line per request on Envoy's stdout.

import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { HttpGrpcAccessLogConfig } from '@sekisho/proto/envoy/extensions/access_loggers/grpc/v3/als';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import { identityHeaders } from '@sekisho/service-kit/contract';
import { threatAccessLogName, threatRulesTag } from '@sekisho/service-kit/threat-contract';
import type { ThreatsIR } from '../ir/types';
import { durationFromMs } from './duration';
import { requestIdOperator, startTimeIso } from './formatters';

/**
 * The reference design's log_structure fields; the Authorization header is never logged.
 * Envoy's stdout logger rather than a file logger on /dev/stdout: opening /dev/stdout fails
 * (ENXIO) when Envoy's stdout is a socket, which is what Node's child_process gives it.
 */
export function accessLog(): StdoutAccessLog {
  return StdoutAccessLog.fromPartial({
    logFormat: {
      jsonFormat: {
        timestamp: startTimeIso,
        correlation_id: requestIdOperator,
        user_id: `%REQ(${identityHeaders.userId.toUpperCase()})%`,
        ip_address: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%',
        user_agent: '%REQ(USER-AGENT)%',
        // The path the client asked for, before any rewrite, without its query (which may carry tokens).
        endpoint: '%PATH(NQ:ORIG_OR_PATH)%',
        method: '%REQ(:METHOD)%',
        status_code: '%RESPONSE_CODE%',
        response_time: '%DURATION%',
        response_flags: '%RESPONSE_FLAGS%',
        upstream_cluster: '%UPSTREAM_CLUSTER%',
        route_name: '%ROUTE_NAME%',
      },
    },
  });
}

/**
 * The threat detector's feed: every finished request over gRPC, buffered by Envoy and never
 * waited for. The standard fields carry ext-authz's dynamic metadata (the verified user id,
 * which no client can set, unlike a header a request Envoy refuses early still has), so no
 * header is logged; the rules ride as a custom tag, so the detector follows the definition
 * without a channel of its own.
 */
export function threatAccessLog(threats: ThreatsIR): HttpGrpcAccessLogConfig {
  return HttpGrpcAccessLogConfig.fromPartial({
    commonConfig: {
      logName: threatAccessLogName,
      grpcService: { envoyGrpc: { clusterName: threats.clusterName } },
      transportApiVersion: ApiVersion.V3,
      bufferFlushInterval: durationFromMs(threats.flushIntervalMs),
      customTags: [{ tag: threatRulesTag, literal: { value: JSON.stringify(threats.rules) } }],
    },
  });
}
