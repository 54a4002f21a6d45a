import type { KeyObject } from 'node:crypto';
import { generateSigningKey, mintIdToken, type SigningKey } from '@sekisho/devstack/firebase-keys';
import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authzContextKeys, identityHeaders } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { Registry } from 'prom-client';
import { beforeAll, describe, expect, it } from 'vitest';
import { type CheckServiceDeps, check, logDroppedDenials, routeRequirementsOnce } from './check-service';
import { routeRequirements, type VerifyToken } from './decision';
import { DenialLogLimiter } from './denial-log-limiter';
import { importCertificateKey } from './firebase/key-store';
import { VerifiedTokenCache, verifyFirebaseIdToken } from './firebase/verify';
import { createExtAuthzMetrics } from './metrics';
import { compileAuthzPolicy } from './policy';
import { ThreatTable } from './threats/state';

// check() end to end minus the socket: real RS256 tokens and the real verifier, the
// real logger writing into memory, the real metrics. The gRPC socket is in app.test.ts.

const projectId = 'salon-test';
const policy = compileAuthzPolicy(
  AuthzPolicy.fromPartial({
    firebase: { projectId },
    groupClaim: 'tier',
    defaultGroup: 'basic_customer',
    groups: { basic_customer: { permissions: ['read:own_profile'] } },
  }),
);

let key: SigningKey;
let publicKey: KeyObject;
beforeAll(async () => {
  key = await generateSigningKey();
  publicKey = importCertificateKey(key.certificatePem);
});

function setup(overrides: Partial<CheckServiceDeps> = {}) {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const logger = createLogger('ext-authz', {
    level: 'debug',
    destination: {
      write: (line: string) => {
        raw.push(line);
        lines.push(JSON.parse(line));
      },
    },
  });
  const registry = new Registry();
  const verify: VerifyToken = (token, project) =>
    verifyFirebaseIdToken(token, {
      projectId: project,
      resolveKey: (kid) => (kid === key.kid ? { status: 'found', key: publicKey } : { status: 'unknown' }),
      now: Date.now(),
      clockToleranceMs: 5_000,
    });
  const deps: CheckServiceDeps = {
    policy: () => policy,
    verify,
    logger,
    metrics: createExtAuthzMetrics(registry),
    ...overrides,
  };
  return { deps, lines, raw, registry };
}

function request(opts: { authorization?: string; permissions?: string; extraHeaders?: Record<string, string> } = {}) {
  return CheckRequest.fromPartial({
    attributes: {
      source: { address: { socketAddress: { address: '203.0.113.7', portValue: 51234 } } },
      contextExtensions: {
        [authzContextKeys.routeId]: 'customer-profile',
        ...(opts.permissions !== undefined ? { [authzContextKeys.permissions]: opts.permissions } : {}),
      },
      request: {
        http: {
          id: 'envoy-id',
          method: 'GET',
          path: '/api/v1/customer/profile?token=secret-query',
          headers: {
            'x-request-id': 'req-42',
            'user-agent': 'SalonApp/1.0',
            'accept-language': 'en-US,en;q=0.9',
            'x-forwarded-for': '198.51.100.9, 10.0.0.1',
            ...(opts.authorization !== undefined ? { authorization: opts.authorization } : {}),
            ...opts.extraHeaders,
          },
        },
      },
    },
  });
}

const mint = (claims: Record<string, unknown> = {}, extra: { expiresIn?: number; issuedAt?: Date } = {}) =>
  mintIdToken(key, {
    projectId,
    uid: 'user-1',
    email: 'taro.yamada@example.com',
    phoneNumber: '+819012345678',
    claims,
    ...extra,
  });

describe('check', () => {
  it('allows a valid token and logs success at debug without PII', async () => {
    const { deps, lines, raw } = setup();
    const token = await mint();
    const response = await check(request({ authorization: `Bearer ${token}`, permissions: 'read:own_profile' }), deps);

    expect(response.status?.code).toBe(0);
    const set = Object.fromEntries((response.okResponse?.headers ?? []).map((h) => [h.header?.key, h.header?.value]));
    expect(set[identityHeaders.userId]).toBe('user-1');
    expect(set[identityHeaders.email]).toBe('taro.yamada@example.com');
    // auth_time: the threat detector's sign-in fact (a token with a new one is a sign-in).
    expect(response.dynamicMetadata).toEqual({
      user_id: 'user-1',
      group: 'basic_customer',
      auth_time: expect.stringMatching(/^\d+$/),
    });

    expect(lines).toMatchObject([
      // A token issued at sign-in (iat = auth_time), seen for the first time.
      {
        level: 'INFO',
        category: 'security',
        event_type: 'login',
        user_id: 'user-1',
        sign_in_provider: 'password',
        correlation_id: 'req-42',
        status_code: 200,
      },
      {
        level: 'DEBUG',
        category: 'security',
        event_type: 'access_granted',
        user_id: 'user-1',
        correlation_id: 'req-42',
      },
    ]);
    const all = raw.join('');
    expect(all).not.toContain(token);
    expect(all).not.toContain('taro.yamada');
    expect(all).not.toContain('9012345678');
  });

  it("decides a sidecar's mesh check on the peer Envoy verified (source.principal), answering 403 in the JSON format", async () => {
    const meshRequest = (principal: string | undefined, permissions: string) =>
      CheckRequest.fromPartial({
        attributes: {
          source: {
            address: { socketAddress: { address: '10.0.0.5', portValue: 40000 } },
            ...(principal !== undefined ? { principal } : {}),
          },
          contextExtensions: {
            [authzContextKeys.routeId]: 'appointment:get-appointments-prefix',
            [authzContextKeys.permissions]: permissions,
            [authzContextKeys.meshTrustDomain]: 'salon.test',
          },
          request: {
            http: {
              method: 'GET',
              path: '/appointments/7',
              headers: {
                'x-request-id': 'req-mesh',
                'x-sekisho-user-id': 'user-1',
                'x-sekisho-user-group': 'basic_customer',
              },
            },
          },
        },
      });
    const { deps, lines } = setup();
    const allowed = await check(meshRequest('spiffe://salon.test/ns/salon/sa/customer', 'read:own_profile'), deps);
    expect(allowed.status?.code).toBe(0);
    expect(allowed.okResponse?.headers.map((h) => [h.header?.key, h.header?.value])).toEqual([
      ['x-sekisho-user-id', 'user-1'],
      ['x-sekisho-user-group', 'basic_customer'],
      ['x-sekisho-user-permissions', 'read:own_profile'],
    ]);
    const noPeer = await check(meshRequest(undefined, 'read:own_profile'), deps);
    expect(noPeer.deniedResponse?.status?.code).toBe(403);
    expect(JSON.parse(noPeer.deniedResponse?.body ?? '{}')).toMatchObject({
      error: { code: 'INSUFFICIENT_PERMISSIONS', correlation_id: 'req-mesh' },
    });
    expect(lines.find((line) => line.event_type === 'permission_denied')).toMatchObject({
      error_details: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'no_peer_identity' },
    });
    const lacking = await check(meshRequest('spiffe://salon.test/ns/salon/sa/customer', 'create:appointments'), deps);
    expect(lacking.deniedResponse?.status?.code).toBe(403);
  });

  it('logs a geo anomaly refusal as a security event with its rule and severity, never the device id', async () => {
    const threats = new ThreatTable();
    const untilMs = Date.now() + 3_600_000;
    threats.replace([
      { kind: 'auth', subject: 'user-1', rule: 'geo_anomaly', severity: 'medium', untilMs, authTimeS: 0, devices: [] },
    ]);
    const { deps, lines, raw, registry } = setup({ threats });
    const token = await mint();
    const response = await check(
      request({ authorization: `Bearer ${token}`, extraHeaders: { 'x-device-id': 'unregistered-device-0001' } }),
      deps,
    );
    expect(response.deniedResponse?.status?.code).toBe(401);
    expect(lines.find((line) => line.event_type === 'additional_auth_required')).toMatchObject({
      category: 'security',
      user_id: 'user-1',
      status_code: 401,
      rule: 'geo_anomaly',
      severity: 'medium',
      blocked_until: new Date(untilMs).toISOString(),
      error_details: { code: 'ADDITIONAL_AUTH_REQUIRED', reason: 'additional_auth_required' },
    });
    expect(raw.join('')).not.toContain('unregistered-device-0001');
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_threat_refusals_total')).toContain(
      'code="ADDITIONAL_AUTH_REQUIRED",rule="geo_anomaly",severity="medium"',
    );
  });

  it('logs failed_auth with the request facts, never the token or query string', async () => {
    const { deps, lines, raw } = setup();
    const token = await mint({}, { issuedAt: new Date(Date.now() - 2 * 3_600_000) });
    const response = await check(request({ authorization: `Bearer ${token}` }), deps);

    expect(response.deniedResponse?.status?.code).toBe(401);
    expect(JSON.parse(response.deniedResponse?.body ?? '').error).toMatchObject({
      code: 'TOKEN_EXPIRED',
      correlation_id: 'req-42',
      message: 'The access token has expired.',
    });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'WARN',
      category: 'security',
      event_type: 'failed_auth',
      correlation_id: 'req-42',
      ip_address: '203.0.113.7',
      forwarded_for: '198.51.100.9',
      user_agent: 'SalonApp/1.0',
      endpoint: '/api/v1/customer/profile',
      method: 'GET',
      route_id: 'customer-profile',
      user_id: null,
      status_code: 401,
      error_details: { code: 'TOKEN_EXPIRED', reason: 'expired' },
    });
    const all = raw.join('');
    expect(all).not.toContain(token);
    expect(all).not.toContain('secret-query');
    expect(all).not.toContain('Bearer');
  });

  it.each([
    { name: 'an anonymous sign-in', signInProvider: 'anonymous', claims: {}, reason: 'sign_in_provider_not_allowed' },
    {
      name: 'a tenant the gateway does not serve',
      signInProvider: undefined,
      claims: { firebase: { sign_in_provider: 'password', tenant: 'other-salon', identities: {} } },
      reason: 'tenant_not_allowed',
    },
  ])('refuses a real token of $name with 401 INVALID_TOKEN, logging the uid', async (c) => {
    const { deps, lines, registry } = setup();
    const token = await mintIdToken(key, {
      projectId,
      uid: 'user-9',
      claims: c.claims,
      ...(c.signInProvider ? { signInProvider: c.signInProvider } : {}),
    });
    const response = await check(request({ authorization: `Bearer ${token}` }), deps);
    expect(response.deniedResponse?.status?.code).toBe(401);
    expect(JSON.parse(response.deniedResponse?.body ?? '').error.code).toBe('INVALID_TOKEN');
    expect(lines[0]).toMatchObject({
      event_type: 'failed_auth',
      user_id: 'user-9',
      error_details: { code: 'INVALID_TOKEN', reason: c.reason },
    });
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_auth_failures_total')).toContain(
      `reason="${c.reason}"} 1`,
    );
  });

  it('logs and counts a dry-run denial as the denial it would have been, but allows', async () => {
    const { deps, lines, registry } = setup();
    const token = await mint();
    const req = request({ authorization: `Bearer ${token}`, permissions: 'create:appointments' });
    if (req.attributes) req.attributes.contextExtensions[authzContextKeys.dryRun] = 'true';
    const response = await check(req, deps);

    expect(response.status?.code).toBe(0);
    const set = Object.fromEntries((response.okResponse?.headers ?? []).map((h) => [h.header?.key, h.header?.value]));
    expect(set['x-sekisho-dry-run-denied']).toBe('INSUFFICIENT_PERMISSIONS');
    expect(response.dynamicMetadata).toMatchObject({ user_id: 'user-1', dry_run_denied: 'INSUFFICIENT_PERMISSIONS' });
    expect(lines.map((l) => l.event_type)).toEqual(['login', 'permission_denied']);
    expect(lines[1]).toMatchObject({
      level: 'WARN',
      event_type: 'permission_denied',
      dry_run: true,
      user_id: 'user-1',
      status_code: 403,
      error_details: { code: 'INSUFFICIENT_PERMISSIONS', missing_permissions: ['create:appointments'] },
    });
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_checks_total')).toContain(
      'result="dry_run",code="INSUFFICIENT_PERMISSIONS"} 1',
    );
  });

  it('logs login only for a token issued at sign-in, not for a refreshed one', async () => {
    const { deps, lines } = setup();
    const refreshed = await mintIdToken(key, {
      projectId,
      uid: 'user-2',
      authTime: new Date(Date.now() - 3 * 3_600_000),
    });
    await check(request({ authorization: `Bearer ${refreshed}` }), deps);
    expect(lines.map((l) => l.event_type)).toEqual(['access_granted']);
  });

  it('logs login once per token when the verified-token cache remembers it', async () => {
    const { deps, lines } = setup();
    const cache = new VerifiedTokenCache(10);
    deps.verify = (token, project) =>
      verifyFirebaseIdToken(token, {
        projectId: project,
        resolveKey: (kid) => (kid === key.kid ? { status: 'found', key: publicKey } : { status: 'unknown' }),
        now: Date.now(),
        clockToleranceMs: 5_000,
        cache,
      });
    const token = await mint();
    for (let i = 0; i < 3; i++) await check(request({ authorization: `Bearer ${token}` }), deps);
    expect(lines.filter((l) => l.event_type === 'login')).toHaveLength(1);
  });

  it('writes a bounded number of denial records under a flood, counting every denial and what was left out', async () => {
    let clock = 0;
    const { deps, lines, registry } = setup();
    deps.denialLog = new DenialLogLimiter(
      { perClient: 3, perCause: 100, windowMs: 60_000 },
      () => clock,
      (dropped, windowMs) => logDroppedDenials(deps.logger, dropped, windowMs),
      // No timer here: the summary comes from the next denial (the timer: denial-log-limiter.test.ts).
      () => () => {},
    );
    for (let i = 0; i < 50; i++) await check(request({ authorization: 'Bearer not.a.token' }), deps);
    await check(
      request({ authorization: 'Bearer not.a.token', extraHeaders: { 'x-forwarded-for': '198.51.100.50' } }),
      deps,
    );

    expect(lines.filter((l) => l.event_type === 'failed_auth').map((l) => l.ip_address)).toEqual([
      '203.0.113.7',
      '203.0.113.7',
      '203.0.113.7',
      '198.51.100.50',
    ]);
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_checks_total')).toContain(
      'result="deny",code="INVALID_TOKEN"} 51',
    );
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_denial_logs_dropped_total')).toContain(
      'event_type="failed_auth",code="INVALID_TOKEN"} 47',
    );

    clock += 60_000;
    await check(request(), deps);
    expect(lines.find((l) => l.event_type === 'denial_logs_dropped')).toMatchObject({
      level: 'WARN',
      category: 'technical',
      window_seconds: 60,
      dropped: { 'failed_auth:header_invalid': 47 },
    });
    expect(lines.at(-1)).toMatchObject({ event_type: 'failed_auth', error_details: { code: 'MISSING_TOKEN' } });
  });

  it('follows the reference log structure in a denial record', async () => {
    const { deps, lines } = setup();
    await check(request(), deps);
    expect(Object.keys(lines[0] ?? {})).toEqual(
      expect.arrayContaining([
        'level',
        'category',
        'event_type',
        'correlation_id',
        'request_id',
        'user_id',
        'ip_address',
        'user_agent',
        'endpoint',
        'method',
        'status_code',
        'response_time',
        'error_details',
      ]),
    );
    expect(Number.isInteger(lines[0]?.response_time)).toBe(true);
    expect(lines[0]?.request_id).toBe('req-42');
  });

  it('logs the client address the gateway derived (its one X-Forwarded-For entry), not the proxy peer', async () => {
    const { deps, lines } = setup();
    await check(request({ extraHeaders: { 'x-forwarded-for': '198.51.100.44' } }), deps);
    expect(lines[0]).toMatchObject({ event_type: 'failed_auth', ip_address: '198.51.100.44' });
  });

  it('counts the header entries Envoy sends in header_map against the route header limits', async () => {
    const { deps, lines } = setup();
    const token = await mint();
    const entries = Array.from({ length: 78 }, (_, i) => ({
      key: `x-extra-${i}`,
      value: 'v',
      rawValue: Buffer.alloc(0),
    }));
    const base = request({ authorization: `Bearer ${token}` });
    const http = base.attributes?.request?.http;
    if (!http || !base.attributes) throw new Error('fixture');
    http.headerMap = {
      headers: [
        ...Object.entries(http.headers).map(([key, value]) => ({ key, value, rawValue: Buffer.alloc(0) })),
        ...entries,
      ],
    };
    http.headers = {};
    base.attributes.contextExtensions[authzContextKeys.maxRequestHeaders] = '80';
    base.attributes.contextExtensions[authzContextKeys.maxRequestHeaderBytes] = '32768';
    const response = await check(base, deps);
    expect(response.deniedResponse?.status?.code).toBe(431);
    expect(JSON.parse(response.deniedResponse?.body ?? '').error).toMatchObject({
      code: 'REQUEST_HEADERS_TOO_LARGE',
      correlation_id: 'req-42',
    });
    expect(lines[0]).toMatchObject({ event_type: 'headers_over_limit', status_code: 431 });
  });

  it('logs permission_denied with the user and the missing permissions', async () => {
    const { deps, lines } = setup();
    const token = await mint();
    const response = await check(
      request({ authorization: `Bearer ${token}`, permissions: 'create:appointments' }),
      deps,
    );

    expect(response.deniedResponse?.status?.code).toBe(403);
    expect(lines[0]).toMatchObject({
      level: 'WARN',
      event_type: 'permission_denied',
      user_id: 'user-1',
      group: 'basic_customer',
      status_code: 403,
      error_details: {
        code: 'INSUFFICIENT_PERMISSIONS',
        required_permissions: ['create:appointments'],
        missing_permissions: ['create:appointments'],
      },
    });
  });

  it.each([
    { entry: { disabled: true as const }, event: 'user_inactive', code: 'USER_INACTIVE', reason: 'account_disabled' },
    { entry: { validAfter: 4_000_000_000 }, event: 'token_revoked', code: 'TOKEN_REVOKED', reason: 'token_revoked' },
  ])('logs $event and counts $code for an account the state refuses', async ({ entry, event, code, reason }) => {
    const { deps, lines, registry } = setup({
      accounts: { loaded: true, get: (uid) => (uid === 'user-1' ? entry : undefined) },
    });
    const response = await check(request({ authorization: `Bearer ${await mint()}` }), deps);
    expect(response.deniedResponse?.status?.code).toBe(401);
    expect(lines.filter((l) => l.event_type !== 'login')[0]).toMatchObject({
      level: 'WARN',
      category: 'security',
      event_type: event,
      user_id: 'user-1',
      status_code: 401,
      error_details: { code, reason },
    });
    expect(await registry.metrics()).toContain(`sekisho_ext_authz_checks_total{result="deny",code="${code}"} 1`);
  });

  it('masks an email address in the path it logs', async () => {
    const { deps, lines } = setup();
    const req = request();
    if (req.attributes?.request?.http) req.attributes.request.http.path = '/api/v1/users/taro.yamada@example.com';
    await check(req, deps);
    expect(lines[0]?.endpoint).toBe('/api/v1/users/ta***@example.com');
  });

  it('masks PII and bounds whatever else a client wrote into the logged fields', async () => {
    const { deps, lines, raw } = setup();
    await check(
      request({
        extraHeaders: {
          'user-agent': `SalonApp/1.0 (hanako.sato@example.com; +81 90-1234-5678)${'x'.repeat(5_000)}`,
          'x-forwarded-for': 'hanako.sato@example.com, 10.0.0.1',
        },
      }),
      deps,
    );
    const all = raw.join('');
    expect(all).not.toContain('hanako.sato');
    expect(all).not.toContain('1234-5678');
    expect(lines[0]?.forwarded_for).toBe('ha***@example.com');
    expect(String(lines[0]?.user_agent)).toMatch(/^SalonApp\/1\.0 \(ha\*\*\*@example\.com; \*\*\*5678\)x+$/);
    expect(String(lines[0]?.user_agent)).toHaveLength(512);
  });

  it('reads headers from header_map when Envoy sends raw headers', async () => {
    const { deps } = setup();
    const token = await mint();
    const req = CheckRequest.fromPartial({
      attributes: {
        request: {
          http: {
            headerMap: {
              headers: [
                { key: 'Authorization', rawValue: Buffer.from(`Bearer ${token}`) },
                { key: 'x-request-id', rawValue: Buffer.from('raw-1') },
              ],
            },
          },
        },
      },
    });
    const response = await check(req, deps);
    expect(response.status?.code).toBe(0);
  });

  it('denies with 503 before a policy arrived', async () => {
    const { deps, lines } = setup({ policy: () => undefined });
    const response = await check(request({ authorization: `Bearer ${await mint()}` }), deps);
    expect(response.status?.code).toBe(14);
    expect(response.deniedResponse?.status?.code).toBe(503);
    expect(lines[0]).toMatchObject({ category: 'technical', event_type: 'authz_unavailable' });
  });

  it('fails closed with 500 when something inside throws', async () => {
    const { deps, lines, registry } = setup({
      verify: async () => {
        throw new Error('verifier exploded for taro.yamada@example.com');
      },
    });
    const response = await check(request({ authorization: 'Bearer abc.def.ghi' }), deps);
    expect(response.status?.code).toBe(13);
    expect(response.deniedResponse?.status?.code).toBe(500);
    expect(JSON.parse(response.deniedResponse?.body ?? '').error).toMatchObject({
      code: 'AUTHORIZATION_ERROR',
      correlation_id: 'req-42',
    });
    expect(lines[0]).toMatchObject({ level: 'ERROR', event_type: 'authz_check_failed' });
    expect(JSON.stringify(lines[0])).not.toContain('taro.yamada');
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_checks_total')).toContain(
      'result="error",code="AUTHORIZATION_ERROR"} 1',
    );
  });

  it('fails closed on a request without attributes', async () => {
    const { deps } = setup();
    const response = await check(CheckRequest.fromPartial({}), deps);
    expect(response.deniedResponse?.status?.code).toBe(401);
  });

  it('counts every outcome by result and code, and failed authentications by reason', async () => {
    const { deps, registry } = setup();
    const token = await mint();
    await check(request({ authorization: `Bearer ${token}` }), deps);
    await check(request(), deps);
    await check(request({ authorization: 'Bearer not.a.token' }), deps);
    await check(request({ authorization: `Bearer ${token}`, permissions: 'delete:everything' }), deps);

    const checks = await registry.getSingleMetricAsString('sekisho_ext_authz_checks_total');
    expect(checks).toContain('result="allow",code="OK"} 1');
    expect(checks).toContain('result="deny",code="MISSING_TOKEN"} 1');
    expect(checks).toContain('result="deny",code="INVALID_TOKEN"} 1');
    expect(checks).toContain('result="deny",code="INSUFFICIENT_PERMISSIONS"} 1');
    const failures = await registry.getSingleMetricAsString('sekisho_ext_authz_auth_failures_total');
    expect(failures).toContain('reason="no_bearer_token"} 1');
    expect(failures).toContain('reason="header_invalid"} 1');
    expect(await registry.getSingleMetricAsString('sekisho_ext_authz_check_duration_seconds')).toContain(
      'sekisho_ext_authz_check_duration_seconds_count{result="deny"} 3',
    );
  });
});

describe('routeRequirementsOnce', () => {
  const extensions = (overrides: Record<string, string>) => ({
    [authzContextKeys.routeId]: 'profile',
    [authzContextKeys.permissions]: 'read:own_profile, write:own_profile',
    ...overrides,
  });

  it('parses each distinct set of context extensions once and reuses the frozen result', () => {
    const first = routeRequirementsOnce(extensions({}));
    expect(first).toEqual(routeRequirements(extensions({})));
    expect(routeRequirementsOnce(extensions({}))).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first.permissions)).toBe(true);
  });

  it('tells apart sets whose values would run together when joined', () => {
    const a = routeRequirementsOnce({ [authzContextKeys.routeId]: 'a|', [authzContextKeys.auth]: 'none' });
    const b = routeRequirementsOnce({ [authzContextKeys.routeId]: 'a', [authzContextKeys.auth]: '|none' });
    expect(a.routeId).toBe('a|');
    expect(a.auth).toBe('none');
    expect(b.routeId).toBe('a');
    expect(b.auth).toBe('required');
  });

  it('reads only the extensions themselves, not names inherited from Object.prototype', () => {
    const inherited = Object.create({ [authzContextKeys.auth]: 'none' }) as Record<string, string>;
    expect(routeRequirementsOnce(inherited).auth).toBe('required');
  });
});
