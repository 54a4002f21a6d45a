import { type AccessLogFilter, ComparisonFilter_Op } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import { describe, expect, it } from 'vitest';
import { accessLog, accessLogClasses, maxLoggedStatus, stdoutAccessLogs } from './access-log';

// One stdout logger per class behind its status filter: every request gets exactly one line
// only if every status is in exactly one class, and if each filter holds what its class does.
const holds = (statuses: (typeof accessLogClasses)[number]['statuses'], status: number) =>
  statuses.some(([from, to]) => status >= from && (status <= to || to >= maxLoggedStatus));

function classOf(status: number) {
  const matched = accessLogClasses.filter((entry) => holds(entry.statuses, status));
  expect(matched, `status ${status}`).toHaveLength(1);
  const [entry] = matched;
  return { level: entry?.level, category: entry?.category, event_type: entry?.event_type };
}

describe('the stdout access log', () => {
  it('puts every status from 0 to 999 (and above) in exactly one class', () => {
    for (let status = 0; status <= maxLoggedStatus + 5; status++) classOf(status);
  });

  it.each([
    [0, 'INFO', 'technical', 'http_served'],
    [200, 'INFO', 'technical', 'http_served'],
    [308, 'INFO', 'technical', 'http_served'],
    [400, 'WARN', 'technical', 'http_client_error'],
    [401, 'WARN', 'security', 'http_unauthenticated'],
    [403, 'WARN', 'security', 'http_forbidden'],
    [404, 'WARN', 'technical', 'http_client_error'],
    [429, 'WARN', 'security', 'http_rate_limited'],
    [431, 'WARN', 'technical', 'http_client_error'],
    [503, 'ERROR', 'technical', 'http_server_error'],
  ])('a %i is %s, %s, %s', (status, level, category, eventType) => {
    expect(classOf(status)).toEqual({ level, category, event_type: eventType });
  });

  // Envoy's reading of a status filter tree (StatusCodeFilter compares the response code, 0 when none).
  const passes = (filter: AccessLogFilter | undefined, status: number): boolean => {
    if (filter?.andFilter) return filter.andFilter.filters.every((f) => passes(f, status));
    if (filter?.orFilter) return filter.orFilter.filters.some((f) => passes(f, status));
    const comparison = filter?.statusCodeFilter?.comparison;
    if (!comparison?.value) throw new Error('a filter other than status, and, or');
    expect(comparison.value.runtimeKey).not.toBe('');
    const value = comparison.value.defaultValue;
    if (comparison.op === ComparisonFilter_Op.EQ) return status === value;
    if (comparison.op === ComparisonFilter_Op.GE) return status >= value;
    return status <= value;
  };

  it("writes each status's line by exactly one logger, the one of its class, with the class's fields", () => {
    const loggers = stdoutAccessLogs();
    expect(loggers).toHaveLength(accessLogClasses.length);
    for (let status = 0; status <= maxLoggedStatus + 5; status++) {
      const writing = loggers.filter((logger) => passes(logger.filter, status));
      expect(writing, `status ${status}`).toHaveLength(1);
      const format = StdoutAccessLog.decode(writing[0]?.typedConfig?.value ?? new Uint8Array()).logFormat?.jsonFormat;
      const { level, category, event_type } = classOf(status);
      expect({ level: format?.level, category: format?.category, event_type: format?.event_type }).toEqual({
        level,
        category,
        event_type,
      });
    }
  });

  it('has the reference log structure, the user from ext-authz, never a header credential or the query', () => {
    const fields = accessLog(accessLogClasses[0] ?? expect.unreachable()).logFormat?.jsonFormat ?? {};
    expect(Object.keys(fields)).toEqual(
      expect.arrayContaining([
        'timestamp',
        'level',
        'category',
        'event_type',
        'correlation_id',
        'user_id',
        'ip_address',
        'user_agent',
        'request_id',
        'endpoint',
        'method',
        'status_code',
        'response_time',
      ]),
    );
    expect(fields.user_id).toBe('%DYNAMIC_METADATA(envoy.filters.http.ext_authz:user_id)%');
    expect(fields.endpoint).toContain('NQ:');
    expect(JSON.stringify(fields)).not.toMatch(/AUTHORIZATION|COOKIE|X-SEKISHO-USER-ID/i);
  });
});
