// The ingress access logs: one JSON line per request on Envoy's stdout (reference §6.1), and the
// threat detector's gRPC feed.

import { AccessLog, AccessLogFilter, ComparisonFilter_Op } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { HttpGrpcAccessLogConfig } from '@sekisho/proto/envoy/extensions/access_loggers/grpc/v3/als';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import { authzDynamicMetadataKeys, authzDynamicMetadataNamespace } from '@sekisho/service-kit/contract';
import { threatAccessLogName, threatRulesTag } from '@sekisho/service-kit/threat-contract';
import type { ThreatsIR } from '../ir/types';
import { pack } from './any';
import { durationFromMs } from './duration';
import { stdoutAccessLogName } from './filter-names';
import { requestIdOperator, startTimeIso } from './formatters';

/** A status range, both ends included. */
type StatusRange = readonly [from: number, to: number];

/** The top of the ranges: HTTP statuses have three digits (a range ending here means "at least"). */
export const maxLoggedStatus = 999;

export interface AccessLogClass {
  level: 'INFO' | 'WARN' | 'ERROR';
  category: 'security' | 'technical';
  event_type: string;
  statuses: readonly StatusRange[];
}

/**
 * What a served request's log line says it was, by its status (the services' level, category
 * and event_type; the event types start with http_ so that Envoy's record of a 401 is not
 * counted twice beside ext-authz's own failed_auth event). Every status is in exactly one class
 * (a unit test says so), so every request is logged once. 0 is a stream that ended before any
 * response.
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

const runtimeKeyOps = {
  [ComparisonFilter_Op.EQ]: 'eq',
  [ComparisonFilter_Op.GE]: 'ge',
  [ComparisonFilter_Op.LE]: 'le',
} as const;

function compareStatus(op: ComparisonFilter_Op.EQ | ComparisonFilter_Op.GE | ComparisonFilter_Op.LE, status: number) {
  // Envoy requires a runtime key; none is ever set, so the default is the value in force.
  const runtimeKey = `sekisho.access_log.status_${runtimeKeyOps[op]}_${status}`;
  return AccessLogFilter.fromPartial({
    statusCodeFilter: { comparison: { op, value: { defaultValue: status, runtimeKey } } },
  });
}

function rangeFilter([from, to]: StatusRange): AccessLogFilter {
  if (from === to) return compareStatus(ComparisonFilter_Op.EQ, from);
  if (from === 0) return compareStatus(ComparisonFilter_Op.LE, to);
  if (to >= maxLoggedStatus) return compareStatus(ComparisonFilter_Op.GE, from);
  return AccessLogFilter.fromPartial({
    andFilter: { filters: [compareStatus(ComparisonFilter_Op.GE, from), compareStatus(ComparisonFilter_Op.LE, to)] },
  });
}

/** Envoy's status filter for a class: its ranges (a stream with no response has status 0). */
function classFilter(statuses: readonly StatusRange[]): AccessLogFilter {
  const [only] = statuses;
  if (statuses.length === 1 && only) return rangeFilter(only);
  return AccessLogFilter.fromPartial({ orFilter: { filters: statuses.map(rangeFilter) } });
}

/**
 * The stdout access log: one logger per class, each behind its status filter, each writing its
 * class's level, category and event_type as constants. Every status is in exactly one class, so
 * every request gets exactly one line. Envoy compares a few integers per logger and formats one
 * line; a %CEL% chain per field (what this wrote until 2026-12-02) cost the gateway ~15 % of its
 * saturation throughput (bench/README.md, "Leased quota and the access log").
 */
export function stdoutAccessLogs(): AccessLog[] {
  return accessLogClasses.map((entry) =>
    AccessLog.fromPartial({
      name: stdoutAccessLogName,
      filter: classFilter(entry.statuses),
      typedConfig: pack(StdoutAccessLog, accessLog(entry)),
    }),
  );
}

/**
 * The reference design's log_structure fields, for one class. Never a credential: no
 * Authorization or Cookie header, and the path without its query (which may carry tokens).
 * user_id is the uid ext-authz verified (its dynamic metadata, null when none), as the services
 * log it; a client's own x-sekisho-user-id, which a request Envoy refuses before ext_authz still
 * carries, never shows. Client-sent text is capped like the services cap it. Envoy's stdout
 * logger rather than a file logger on /dev/stdout: opening /dev/stdout fails (ENXIO) when
 * Envoy's stdout is a socket, which is what Node's child_process gives it.
 */
export function accessLog(entry: AccessLogClass): StdoutAccessLog {
  return StdoutAccessLog.fromPartial({
    logFormat: {
      jsonFormat: {
        timestamp: startTimeIso,
        level: entry.level,
        category: entry.category,
        event_type: entry.event_type,
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
