import type {
  AuthorizationServer,
  CheckRequest,
  CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import type { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { pickLanguage } from '@sekisho/service-kit/errors';
import { type Logger, maskPII } from '@sekisho/service-kit/logger';
import { failClosed, type ResponseContext, toCheckResponse } from './check-response';
import { type Decision, decide, routeRequirements, type VerifyToken } from './decision';
import type { ExtAuthzMetrics } from './metrics';

// envoy.service.auth.v3.Authorization/Check: read the request Envoy describes, decide,
// answer, and leave a security log record and metrics behind. Whatever goes wrong in
// here ends in a denial, never in an allow and never in a crashed process.

export interface CheckServiceDeps {
  /** The AuthzPolicy in force; undefined until the control plane delivered one. */
  policy: () => AuthzPolicy | undefined;
  verify: VerifyToken;
  logger: Logger;
  metrics: ExtAuthzMetrics;
  now?: () => Date;
}

export function createAuthorizationServer(deps: CheckServiceDeps): AuthorizationServer {
  return {
    check(call, callback) {
      check(call.request, deps).then(
        (response) => callback(null, response),
        // check() does not reject; if it ever did, the caller still gets a denial.
        () => callback(null, failClosed('AUTHORIZATION_ERROR', fallbackContext(deps))),
      );
    },
  };
}

export async function check(request: CheckRequest, deps: CheckServiceDeps): Promise<CheckResponse> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  let ctx = fallbackContext(deps);
  try {
    const facts = describeRequest(request);
    ctx = { correlationId: facts.correlationId, language: pickLanguage(facts.acceptLanguage), now: now(deps) };
    const decision = await decide(
      { headers: facts.headers, contextExtensions: facts.contextExtensions },
      deps.policy(),
      deps.verify,
    );
    const response = toCheckResponse(decision, ctx);
    record(decision, facts, deps, seconds());
    return response;
  } catch (error) {
    deps.logger.error(
      {
        category: 'technical',
        event_type: 'authz_check_failed',
        correlation_id: ctx.correlationId,
        status_code: 500,
        error_details: { code: 'AUTHORIZATION_ERROR', message: maskPII(String(error)) },
      },
      'check failed unexpectedly; denying',
    );
    deps.metrics.checkFinished('error', 'AUTHORIZATION_ERROR', seconds());
    return failClosed('AUTHORIZATION_ERROR', ctx);
  }
}

/** What a log record may say about a request. Never the authorization header. */
interface RequestFacts {
  headers: Record<string, string>;
  contextExtensions: Record<string, string>;
  correlationId: string;
  acceptLanguage: string | undefined;
  ipAddress: string | undefined;
  forwardedFor: string | undefined;
  userAgent: string | undefined;
  endpoint: string | undefined;
  method: string | undefined;
}

function describeRequest(request: CheckRequest): RequestFacts {
  const attributes = request.attributes;
  const http = attributes?.request?.http;
  const headers = requestHeaders(http);
  const path = http?.path || headers[':path'];
  return {
    headers,
    contextExtensions: attributes?.contextExtensions ?? {},
    correlationId: (headers['x-request-id'] || http?.id || '').slice(0, 128),
    acceptLanguage: headers['accept-language'],
    // The downstream peer Envoy saw: behind a CDN, the CDN's address.
    ipAddress: attributes?.source?.address?.socketAddress?.address || undefined,
    // The client's claim of its own address (the first X-Forwarded-For hop): for
    // investigation only, since any client can write it.
    forwardedFor: headers['x-forwarded-for']?.split(',')[0]?.trim() || undefined,
    userAgent: headers['user-agent']?.slice(0, 512),
    // Without the query string, which may carry secrets; PII in the path is masked.
    endpoint: path ? maskPII(path.split('?')[0] ?? '').slice(0, 1024) : undefined,
    method: http?.method || headers[':method'] || undefined,
  };
}

type HttpRequest = NonNullable<NonNullable<NonNullable<CheckRequest['attributes']>['request']>['http']>;

// Envoy sends `headers` (duplicates comma-joined) unless encode_raw_headers is on, in
// which case `header_map` carries every header separately: both give the same map here.
function requestHeaders(http: HttpRequest | undefined): Record<string, string> {
  const map: Record<string, string> = Object.create(null);
  if (!http) return map;
  for (const [name, value] of Object.entries(http.headers ?? {})) map[name.toLowerCase()] = value;
  for (const { key, value, rawValue } of http.headerMap?.headers ?? []) {
    const name = key.toLowerCase();
    const text = rawValue && rawValue.length > 0 ? Buffer.from(rawValue).toString('utf8') : value;
    map[name] = map[name] === undefined ? text : `${map[name]},${text}`;
  }
  return map;
}

function record(decision: Decision, facts: RequestFacts, deps: CheckServiceDeps, seconds: number): void {
  const route = routeRequirements(facts.contextExtensions);
  const request = {
    correlation_id: facts.correlationId,
    ip_address: facts.ipAddress,
    forwarded_for: facts.forwardedFor,
    user_agent: facts.userAgent,
    endpoint: facts.endpoint,
    method: facts.method,
    route_id: route.routeId,
  };

  if (decision.allow) {
    deps.metrics.checkFinished('allow', 'OK', seconds);
    deps.logger.debug(
      {
        category: 'security',
        event_type: 'access_granted',
        ...request,
        user_id: decision.identity?.userId ?? null,
        group: decision.identity?.group,
        auth: route.authRequired ? 'required' : 'none',
        status_code: 200,
        response_time: seconds * 1000,
      },
      'access granted',
    );
    return;
  }

  deps.metrics.checkFinished('deny', decision.code, seconds);
  const base = {
    ...request,
    user_id: decision.userId ?? null,
    response_time: seconds * 1000,
    error_details: {
      code: decision.code,
      reason: decision.reason,
      ...(decision.requiredPermissions ? { required_permissions: decision.requiredPermissions } : {}),
      ...(decision.missingPermissions ? { missing_permissions: decision.missingPermissions } : {}),
    },
  };
  switch (decision.code) {
    case 'MISSING_TOKEN':
    case 'TOKEN_EXPIRED':
    case 'INVALID_TOKEN':
      deps.metrics.authFailed(decision.reason);
      deps.logger.warn(
        { category: 'security', event_type: 'failed_auth', ...base, status_code: 401 },
        'authentication failed',
      );
      return;
    case 'INSUFFICIENT_PERMISSIONS':
      deps.logger.warn(
        { category: 'security', event_type: 'permission_denied', ...base, group: decision.group, status_code: 403 },
        'permission denied',
      );
      return;
    case 'SERVICE_UNAVAILABLE':
      deps.logger.warn(
        { category: 'technical', event_type: 'authz_unavailable', ...base, status_code: 503 },
        'cannot decide yet (no policy or no keys); denying',
      );
      return;
  }
}

function now(deps: CheckServiceDeps): Date {
  return deps.now?.() ?? new Date();
}

function fallbackContext(deps: CheckServiceDeps): ResponseContext {
  return { correlationId: '', language: 'ja', now: now(deps) };
}
