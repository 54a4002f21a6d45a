import { describe, expect, it } from 'vitest';
import { accessLog, accessLogClasses, classifyExpression, maxLoggedStatus } from './access-log';

// The log line's level, category and event_type come from one CEL chain over the classes in
// order, the last being the fallback: that is right only if every status is in exactly one
// class (then the first class that holds a status is its class, whatever the order).
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

  it('computes each field with one CEL chain, no response code being the class of 0', () => {
    expect(classifyExpression('level')).toBe(
      "%CEL(!has(response.code) ? 'INFO' : response.code <= 399 ? 'INFO' : response.code == 401 ? 'WARN' : " +
        "response.code == 403 ? 'WARN' : response.code == 429 ? 'WARN' : response.code >= 500 ? 'ERROR' : 'WARN')%",
    );
  });

  it('has the reference log structure, the user from ext-authz, never a header credential or the query', () => {
    const fields = accessLog().logFormat?.jsonFormat ?? {};
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
