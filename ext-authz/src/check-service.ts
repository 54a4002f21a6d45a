import { isIP } from 'node:net';
import type { handleUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import {
  AuthorizationService,
  type CheckRequest,
  type CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { authzContextKeys, clientAddressHeader } from '@sekisho/service-kit/contract';
import { pickLanguage } from '@sekisho/service-kit/errors';
import { type Logger, maskPII } from '@sekisho/service-kit/logger';
import type { AccountView } from './accounts/state';
import { type CheckRequestView, decodeCheckRequestView, viewOfCheckRequest } from './check-request';
import {
  encodeCheckResponse,
  failClosed,
  type ResponseContext,
  rateLimitedResponse,
  toCheckResponse,
  withResponseHeaders,
} from './check-response';
import {
  type CheckInput,
  type Decision,
  type Denial,
  decide,
  type HeaderSize,
  type RouteRequirements,
  routeRequirements,
  type VerifyToken,
} from './decision';
import type { DenialLogLimiter, DroppedSummary } from './denial-log-limiter';
import type { ExtAuthzMetrics } from './metrics';
import type { CompiledPolicy } from './policy';
import type { ThreatView } from './threats/state';
import type { UserLimits } from './user-limits';

// envoy.service.auth.v3.Authorization/Check: read the request Envoy describes, decide,
// answer, and leave a security log record and metrics behind. Whatever goes wrong in
// here ends in a denial, never in an allow and never in a crashed process.

export interface CheckServiceDeps {
  /** The policy in force; undefined until the control plane delivered one. */
  policy: () => CompiledPolicy | undefined;
  verify: VerifyToken;
  logger: Logger;
  metrics: ExtAuthzMetrics;
  /** The replica's copy of the account state; absent = the feature is off. */
  accounts?: AccountView;
  /** The replica's copy of the threat detector's blocks; absent = the feature is off. */
  threats?: ThreatView;
  /**
   * The per-user limits counted in the Check (perUserLimits: ext-authz), for routes whose
   * context names their families; absent = Envoy's ratelimit filter counts them.
   */
  userLimits?: UserLimits;
  /** Bounds the denial records per cause and client IP; absent = every denial is written. */
  denialLog?: DenialLogLimiter;
  now?: () => Date;
}

/**
 * Authorization/Check with this service's request decoder: the handler is given the
 * CheckRequestView that decodeCheckRequestView reads off the wire (both transports call the
 * definition's requestDeserialize), never the generated decoder's whole CheckRequest.
 */
export const authorizationService = {
  ...AuthorizationService,
  check: {
    ...AuthorizationService.check,
    requestDeserialize: decodeCheckRequestView,
    // grpc-js's serializer; service-kit's http2 transport is given encodeCheckResponse itself.
    responseSerialize: (response: CheckResponse) => Buffer.from(encodeCheckResponse(response).finish()),
  },
} as const;

export function createAuthorizationServer(deps: CheckServiceDeps): {
  check: handleUnaryCall<CheckRequestView, CheckResponse>;
} {
  const failed = (callback: sendUnaryData<CheckResponse>) =>
    callback(null, failClosed('AUTHORIZATION_ERROR', fallbackContext(deps)));
  return {
    check(call, callback) {
      const response = checkView(call.request, deps);
      if (!(response instanceof Promise)) {
        callback(null, response);
        return;
      }
      response.then(
        (answer) => callback(null, answer),
        // checkView() does not reject; if it ever did, the caller still gets a denial.
        () => failed(callback),
      );
    },
  };
}

/** check() of a generated CheckRequest (tests, and what the view is compared with). */
export function check(request: CheckRequest, deps: CheckServiceDeps): CheckResponse | Promise<CheckResponse> {
  return checkView(viewOfCheckRequest(request), deps);
}

/**
 * The answer to one Check. Synchronous unless the token's key had to be fetched: no promise
 * per call on the hot path. Never throws and never rejects: an error is a denial.
 */
export function checkView(request: CheckRequestView, deps: CheckServiceDeps): CheckResponse | Promise<CheckResponse> {
  const started = performance.now();
  // Known once the request is read; the error path falls back to an anonymous context.
  let facts: RequestFacts | undefined;
  let nowMs = 0;
  try {
    facts = describeRequest(request);
    nowMs = deps.now ? deps.now().getTime() : Date.now();
    const input: CheckInput = { headers: facts.headers, route: facts.route, nowMs };
    if (facts.path !== undefined) input.path = facts.path;
    if (facts.headerSize) input.headerSize = facts.headerSize;
    if (facts.ipAddress !== undefined) input.clientIp = facts.ipAddress;
    if (facts.peerPrincipal !== undefined) input.peerPrincipal = facts.peerPrincipal;
    const decision = decide(input, deps.policy(), deps.verify, deps.accounts, deps.threats);
    const known = facts;
    const at = nowMs;
    return decision instanceof Promise
      ? decision.then(
          (decided) => answer(decided, known, at, deps, started),
          (error) => failure(error, contextOf(known, at), deps, started),
        )
      : answer(decision, facts, nowMs, deps, started);
  } catch (error) {
    return failure(error, facts ? contextOf(facts, nowMs) : undefined, deps, started);
  }
}

/** What a denial's body says besides its code: built only for a denial (an allow has no body). */
function contextOf(facts: RequestFacts, nowMs: number): ResponseContext {
  return { correlationId: facts.correlationId, language: pickLanguage(facts.acceptLanguage), now: new Date(nowMs) };
}

/** An allow carries no body, so its response needs no context (toCheckResponse reads none). */
const allowContext: ResponseContext = Object.freeze({ correlationId: '', language: 'ja', now: new Date(0) });

function answer(
  decision: Decision,
  facts: RequestFacts,
  nowMs: number,
  deps: CheckServiceDeps,
  started: number,
): CheckResponse | Promise<CheckResponse> {
  const { userLimits } = deps;
  if (decision.allow && decision.identity && facts.route.userLimits.length > 0 && userLimits?.active()) {
    return limited(decision, decision.identity.userId, userLimits, facts, nowMs, deps, started);
  }
  return answerDecided(decision, facts, nowMs, deps, started);
}

/**
 * An allowed request of a verified user on a route with per-user limits: counted (one Redis
 * round trip, batched with the other Checks under way) before the answer. Over a limit it is
 * refused with 429 as Envoy's ratelimit filter would have; within them it goes on with the
 * RateLimit fields for the response. A Redis failure is answered by the failure mode inside.
 */
function limited(
  decision: Decision & { allow: true },
  userId: string,
  userLimits: UserLimits,
  facts: RequestFacts,
  nowMs: number,
  deps: CheckServiceDeps,
  started: number,
): Promise<CheckResponse> {
  return userLimits.limit(facts.route.routeId, facts.route.userLimits, userId).then(
    (outcome) => {
      if (!outcome.overLimit) {
        const response = answerDecided(decision, facts, nowMs, deps, started);
        return withResponseHeaders(response, outcome.headers);
      }
      // The rate-limit decision logged the excess (rate_limit_exceeded, throttled) and counted it per rule.
      const ctx = contextOf(facts, nowMs);
      const response = rateLimitedResponse(outcome.headers, outcome.retryAfter, ctx);
      deps.metrics.checkFinished('deny', 'RATE_LIMIT_EXCEEDED', (performance.now() - started) / 1000);
      return response;
    },
    (error) => failure(error, contextOf(facts, nowMs), deps, started),
  );
}

function answerDecided(
  decision: Decision,
  facts: RequestFacts,
  nowMs: number,
  deps: CheckServiceDeps,
  started: number,
): CheckResponse {
  let ctx: ResponseContext | undefined;
  try {
    ctx = decision.allow ? allowContext : contextOf(facts, nowMs);
    const response = toCheckResponse(decision, ctx);
    record(decision, facts, deps, (performance.now() - started) / 1000);
    return response;
  } catch (error) {
    return failure(error, decision.allow ? contextOf(facts, nowMs) : ctx, deps, started);
  }
}

function failure(
  error: unknown,
  ctx: ResponseContext | undefined,
  deps: CheckServiceDeps,
  started: number,
): CheckResponse {
  deps.logger.error(
    {
      category: 'technical',
      event_type: 'authz_check_failed',
      correlation_id: ctx?.correlationId ?? '',
      status_code: 500,
      error_details: { code: 'AUTHORIZATION_ERROR', message: maskPII(String(error)).slice(0, 1024) },
    },
    'check failed unexpectedly; denying',
  );
  deps.metrics.checkFinished('error', 'AUTHORIZATION_ERROR', (performance.now() - started) / 1000);
  return failClosed('AUTHORIZATION_ERROR', ctx ?? fallbackContext(deps));
}

/** What the decision and the log record need from Envoy's description of the request. */
interface RequestFacts {
  headers: Record<string, string>;
  route: RouteRequirements;
  correlationId: string;
  acceptLanguage: string | undefined;
  /**
   * The client address Envoy derived, which the gateway passes as the only X-Forwarded-For
   * entry; else the downstream peer (behind a CDN, the CDN's address).
   */
  ipAddress: string | undefined;
  headerSize: HeaderSize | undefined;
  path: string | undefined;
  method: string | undefined;
  /** The calling workload's verified identity (a sidecar's mTLS peer); undefined at the ingress. */
  peerPrincipal: string | undefined;
}

function describeRequest(request: CheckRequestView): RequestFacts {
  const headers = request.headers;
  return {
    headers,
    route: routeRequirementsOnce(request.contextExtensions),
    correlationId: (headers['x-request-id'] || request.id || '').slice(0, 128),
    acceptLanguage: headers['accept-language'],
    ipAddress: derivedClientAddress(headers) ?? (request.sourceAddress || undefined),
    headerSize: request.headerSize,
    path: request.path || headers[':path'],
    method: request.method || headers[':method'] || undefined,
    peerPrincipal: request.principal || undefined,
  };
}

// Envoy sends a route's context_extensions unchanged with every Check, so each distinct set
// is parsed once (the split permission list, the header limits) and the frozen result reused.
// Keyed by every value the parse reads, length-prefixed so no two sets share a key; bounded,
// the oldest set going first (a new policy's routes replace the old ones).
const routeKeys = Object.values(authzContextKeys);
const parsedRoutes = new Map<string, RouteRequirements>();
const maxParsedRoutes = 4096;

// The decoder hands the same frozen object for the same extensions bytes (check-request.ts,
// extensionRuns): such an object is looked up by identity, without building the key.
const routesByObject = new WeakMap<object, RouteRequirements>();

export function routeRequirementsOnce(contextExtensions: Readonly<Record<string, string>>): RouteRequirements {
  const frozen = Object.isFrozen(contextExtensions);
  if (frozen) {
    const known = routesByObject.get(contextExtensions);
    if (known !== undefined) return known;
  }
  const route = routeRequirementsByValue(contextExtensions);
  if (frozen) routesByObject.set(contextExtensions, route);
  return route;
}

function routeRequirementsByValue(contextExtensions: Readonly<Record<string, string>>): RouteRequirements {
  let key = '';
  for (const name of routeKeys) {
    const value = Object.hasOwn(contextExtensions, name) ? contextExtensions[name] : undefined;
    key += value === undefined ? '-|' : `${value.length}:${value}|`;
  }
  let route = parsedRoutes.get(key);
  if (route === undefined) {
    const parsed = routeRequirements(contextExtensions);
    Object.freeze(parsed.permissions);
    if (parsed.owner) Object.freeze(parsed.owner);
    if (parsed.headerLimits) Object.freeze(parsed.headerLimits);
    if (parsed.mesh) Object.freeze(parsed.mesh);
    Object.freeze(parsed.userLimits);
    route = Object.freeze(parsed);
    if (parsedRoutes.size >= maxParsedRoutes) parsedRoutes.delete(parsedRoutes.keys().next().value as string);
    parsedRoutes.set(key, route);
  }
  return route;
}

/** One IP literal, as the ingress writes it; a list or anything else is a client's claim. */
function derivedClientAddress(headers: Record<string, string>): string | undefined {
  const value = headers[clientAddressHeader]?.trim();
  return value !== undefined && isIP(value) !== 0 ? value : undefined;
}

/**
 * The reference design's request fields, built only for a record that is written.
 * Everything a client can write is PII-masked and cut to a bounded length; the
 * authorization header and the query string (which may carry tokens) never appear.
 */
function requestFields(facts: RequestFacts) {
  const clientText = (text: string | undefined, max: number) =>
    text === undefined || text === '' ? undefined : maskPII(text).slice(0, max);
  return {
    correlation_id: facts.correlationId,
    // The reference's request_id: Envoy's x-request-id, which is also the correlation id.
    request_id: facts.correlationId,
    ip_address: facts.ipAddress,
    // The client's claim of its own address (the first X-Forwarded-For hop): for
    // investigation only, since any client can write it.
    forwarded_for: clientText(facts.headers['x-forwarded-for']?.split(',', 1)[0]?.trim(), 64),
    user_agent: clientText(facts.headers['user-agent'], 512),
    endpoint: clientText(facts.path?.split('?', 1)[0], 1024),
    method: facts.method?.slice(0, 16),
    route_id: facts.route.routeId,
    // Verified by Envoy (a mesh workload's certificate), not a client's claim.
    ...(facts.peerPrincipal !== undefined ? { peer_principal: facts.peerPrincipal.slice(0, 512) } : {}),
  };
}

function record(decision: Decision, facts: RequestFacts, deps: CheckServiceDeps, seconds: number): void {
  if (decision.allow && decision.signIn && decision.identity) {
    deps.logger.info(
      {
        category: 'security',
        event_type: 'login',
        ...requestFields(facts),
        user_id: decision.identity.userId,
        sign_in_provider: decision.signIn.provider,
        status_code: 200,
        response_time: Math.round(seconds * 1000),
      },
      'first request with a new sign-in',
    );
  }
  if (decision.allow && decision.dryRunDenied) {
    // Logged and counted as the denial it would have been, told apart by dry_run.
    recordDenial(decision.dryRunDenied, facts, deps, seconds, true);
    return;
  }
  if (decision.allow) {
    deps.metrics.checkFinished('allow', 'OK', seconds);
    // Every allowed request would be a record; it is built only when debug is on.
    if (!deps.logger.isLevelEnabled('debug')) return;
    deps.logger.debug(
      {
        category: 'security',
        event_type: 'access_granted',
        ...requestFields(facts),
        user_id: decision.identity?.userId ?? null,
        group: decision.identity?.group?.name,
        auth: facts.route.auth,
        status_code: 200,
        response_time: Math.round(seconds * 1000),
      },
      'access granted',
    );
    return;
  }

  recordDenial(decision, facts, deps, seconds, false);
}

/** How each denial is written: the reference design's security events, and two technical ones. */
const denialRecords: Record<
  Denial['code'],
  { category: 'security' | 'technical'; event: string; status: number; message: string }
> = {
  MISSING_TOKEN: { category: 'security', event: 'failed_auth', status: 401, message: 'authentication failed' },
  TOKEN_EXPIRED: { category: 'security', event: 'failed_auth', status: 401, message: 'authentication failed' },
  INVALID_TOKEN: { category: 'security', event: 'failed_auth', status: 401, message: 'authentication failed' },
  TOKEN_REVOKED: {
    category: 'security',
    event: 'token_revoked',
    status: 401,
    message: 'token issued before the account was signed out everywhere',
  },
  USER_INACTIVE: { category: 'security', event: 'user_inactive', status: 401, message: 'account is disabled' },
  INSUFFICIENT_PERMISSIONS: {
    category: 'security',
    event: 'permission_denied',
    status: 403,
    message: 'permission denied',
  },
  REQUEST_HEADERS_TOO_LARGE: {
    category: 'security',
    event: 'headers_over_limit',
    status: 431,
    message: 'request headers over the limit once the identity headers are added',
  },
  IP_BLOCKED: { category: 'security', event: 'ip_blocked', status: 403, message: 'request from a blocked IP address' },
  USER_BLOCKED: { category: 'security', event: 'user_blocked', status: 403, message: 'request of a blocked user' },
  ADDITIONAL_AUTH_REQUIRED: {
    category: 'security',
    event: 'additional_auth_required',
    status: 401,
    message: 'sign-in far from the usual location: a second factor or a trusted device is required',
  },
  RATE_LIMIT_EXCEEDED: {
    category: 'security',
    event: 'rate_limit_aggressive',
    status: 429,
    message: 'request over the aggressive limit of a user flagged for suspicious usage',
  },
  SERVICE_UNAVAILABLE: {
    category: 'technical',
    event: 'authz_unavailable',
    status: 503,
    message: 'cannot decide yet (no policy, no keys or no account state); denying',
  },
};

function recordDenial(decision: Denial, facts: RequestFacts, deps: CheckServiceDeps, seconds: number, dryRun: boolean) {
  // Metrics count every denial; only the log record may be left out under a flood.
  deps.metrics.checkFinished(dryRun ? 'dry_run' : 'deny', decision.code, seconds);
  const record = denialRecords[decision.code];
  if (record.event === 'failed_auth') deps.metrics.authFailed(decision.reason);
  if (decision.threat) deps.metrics.threatRefused(decision.code, decision.threat.rule, decision.threat.severity);
  if (deps.denialLog && !deps.denialLog.admit(`${record.event}:${decision.reason}`, facts.ipAddress)) {
    deps.metrics.denialLogDropped(record.event, decision.code);
    return;
  }
  deps.logger.warn(
    {
      category: record.category,
      event_type: record.event,
      ...requestFields(facts),
      user_id: decision.userId ?? null,
      ...(record.event === 'permission_denied' ? { group: decision.group } : {}),
      status_code: record.status,
      response_time: Math.round(seconds * 1000),
      ...(dryRun ? { dry_run: true } : {}),
      ...(decision.threat
        ? {
            rule: decision.threat.rule,
            severity: decision.threat.severity,
            blocked_until: new Date(decision.threat.untilMs).toISOString(),
          }
        : {}),
      error_details: {
        code: decision.code,
        reason: decision.reason,
        ...(decision.requiredPermissions ? { required_permissions: decision.requiredPermissions } : {}),
        ...(decision.missingPermissions ? { missing_permissions: decision.missingPermissions } : {}),
      },
    },
    record.message,
  );
}

/** A window in which denial records were left out ends: one line says how many, by cause. */
export function logDroppedDenials(logger: Logger, dropped: DroppedSummary, windowMs: number): void {
  logger.warn(
    {
      category: 'technical',
      event_type: 'denial_logs_dropped',
      window_seconds: windowMs / 1000,
      dropped: Object.fromEntries(dropped),
    },
    'denial log records left out under a flood',
  );
}

function now(deps: CheckServiceDeps): Date {
  return deps.now?.() ?? new Date();
}

function fallbackContext(deps: CheckServiceDeps): ResponseContext {
  return { correlationId: '', language: 'ja', now: now(deps) };
}
