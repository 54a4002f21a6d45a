// The ingress access logs: one JSON line per request on Envoy's stdout (reference §6.1), and the
// threat detector's gRPC feed.

import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { HttpGrpcAccessLogConfig } from '@sekisho/proto/envoy/extensions/access_loggers/grpc/v3/als';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import { authzDynamicMetadataKeys, authzDynamicMetadataNamespace } from '@sekisho/service-kit/contract';
import { threatAccessLogName, threatRulesTag } from '@sekisho/service-kit/threat-contract';
import type { ThreatsIR } from '../ir/types';
import { durationFromMs } from './duration';
import { requestIdOperator, startTimeIso } from './formatters';

/** A status range, both ends included. */
type StatusRange = readonly [from: number, to: number];

/** The top of the ranges: HTTP statuses have three digits (a range ending here means "at least"). */
export const maxLoggedStatus = 999;

interface AccessLogClass {
  level: 'INFO' | 'WARN' | 'ERROR';
  category: 'security' | 'technical';
  event_type: string;
  statuses: readonly StatusRange[];
}

/**
 * What a served request's log line says it was, by its status (the services' level, category
 * and event_type; the event types start with http_ so that Envoy's record of a 401 is not
 * counted twice beside ext-authz's own failed_auth event). Every status is in exactly one class
 * (a unit test says so); the last is what is left, so its ranges are never tested by Envoy.
 * 0 is a stream that ended before any response.
 */
export const accessLogClasses: readonly AccessLogClass[] = [
  { level: 'INFO', category: 'technical', event_type: 'http_served', statuses: [[0, 399]] },
  { level: 'WARN', category: 'security', event_type: 'http_unauthenticated', statuses: [[401, 401]] },
  { level: 'WARN', category: 'security', event_type: 'http_forbidden', statuses: [[403, 403]] },
  { level: 'WARN', category: 'security', event_type: 'http_rate_limited', statuses: [[429, 429]] },
  { level: 'ERROR', category: 'technical', event_type: 'http_server_error', statuses: [[500, maxLoggedStatus]] },
  {
    level: 'WARN',
    category: 'technical',
    event_type: 'http_client_error',
    statuses: [
      [400, 400],
      [402, 402],
      [404, 428],
      [430, 499],
    ],
  },
];

function celStatusIn(ranges: readonly StatusRange[]): string {
  return ranges
    .map(([from, to]) =>
      from === to
        ? `response.code == ${from}`
        : from === 0
          ? `response.code <= ${to}`
          : to >= maxLoggedStatus
            ? `response.code >= ${from}`
            : `(response.code >= ${from} && response.code <= ${to})`,
    )
    .join(' || ');
}

/**
 * A CEL expression (Envoy's built-in %CEL% operator) giving `field` of the request's class: one
 * stdout logger computes all three, rather than one logger per class behind a status filter,
 * each a copy of the whole format. No response code at all is the class of 0.
 */
export function classifyExpression(field: 'level' | 'category' | 'event_type'): string {
  const fallback = accessLogClasses.at(-1);
  const [first] = accessLogClasses;
  if (!fallback || !first) throw new Error('access log: no classes');
  const tested = accessLogClasses.slice(0, -1);
  const chain = tested.reduceRight(
    (otherwise, entry) => `${celStatusIn(entry.statuses)} ? '${entry[field]}' : ${otherwise}`,
    `'${fallback[field]}'`,
  );
  return `%CEL(!has(response.code) ? '${first[field]}' : ${chain})%`;
}

/**
 * The reference design's log_structure fields. Never a credential: no Authorization or Cookie
 * header, and the path without its query (which may carry tokens). user_id is the uid
 * ext-authz verified (its dynamic metadata, null when none), as the services log it; a client's
 * own x-sekisho-user-id, which a request Envoy refuses before ext_authz still carries, never
 * shows. Client-sent text is capped like the services cap it. Envoy's stdout logger rather
 * than a file logger on /dev/stdout: opening /dev/stdout fails (ENXIO) when Envoy's stdout is
 * a socket, which is what Node's child_process gives it.
 */
export function accessLog(): StdoutAccessLog {
  return StdoutAccessLog.fromPartial({
    logFormat: {
      jsonFormat: {
        timestamp: startTimeIso,
        level: classifyExpression('level'),
        category: classifyExpression('category'),
        event_type: classifyExpression('event_type'),
        correlation_id: requestIdOperator,
        user_id: `%DYNAMIC_METADATA(${authzDynamicMetadataNamespace}:${authzDynamicMetadataKeys.userId})%`,
        ip_address: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%',
        user_agent: '%REQ(USER-AGENT):512%',
        // The correlation id is Envoy's x-request-id, which is also the request's id.
        request_id: requestIdOperator,
        // The path the client asked for, without its query, before any rewrite (header-hygiene.ts).
        endpoint: '%PATH(NQ:ORIG_OR_PATH):1024%',
        method: '%REQ(:METHOD):16%',
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
 * without a channel of its own. With the geo anomaly rule on, the CDN's latitude and longitude
 * headers go along (never a credential; a direct client's copies were removed by the first
 * filter, header-hygiene.ts, so what arrives is what a trusted proxy wrote).
 */
export function threatAccessLog(threats: ThreatsIR): HttpGrpcAccessLogConfig {
  return HttpGrpcAccessLogConfig.fromPartial({
    additionalRequestHeadersToLog: locationHeaders(threats),
    commonConfig: {
      logName: threatAccessLogName,
      grpcService: { envoyGrpc: { clusterName: threats.clusterName } },
      transportApiVersion: ApiVersion.V3,
      bufferFlushInterval: durationFromMs(threats.flushIntervalMs),
      customTags: [{ tag: threatRulesTag, literal: { value: JSON.stringify(threats.rules) } }],
    },
  });
}

/** The headers the geo anomaly rule reads its place from; none when the rule is off. */
export function locationHeaders(threats: ThreatsIR | undefined): string[] {
  const geo = threats?.rules.geoAnomaly;
  return geo ? [geo.latitudeHeader, geo.longitudeHeader] : [];
}
