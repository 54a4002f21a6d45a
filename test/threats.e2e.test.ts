import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, waitUntil } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// Threat detection through the whole stack: Envoy streams its access log to the threat
// detector (gRPC, configured by the control plane from the definition's `threats`; the stack
// runs it as its own process, as deployed), the
// detector counts failed authentications per client IP in the stack's Redis and blocks the
// IP, and both ext-authz replicas refuse it from memory, on every route, before any token
// work. The client address comes from X-Forwarded-For, believed from the loopback proxy.

let stack: Stack;
let detectorUrl: string;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-threats-e2e-'));
  const [gateway, customer, authzA, authzB, rateLimit, threat] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const definitionFile = join(dir, 'gateway.yaml');
  const fastHealth = { interval: '1s', timeout: '1s', unhealthyThreshold: 2, healthyThreshold: 1 };
  await writeFile(
    definitionFile,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: gateway } },
      identity: {
        firebase: { projectId: 'demo-sekisho-threats' },
        groupClaim: 'tier',
        defaultGroup: 'basic_customer',
        groups: { basic_customer: ['read:own_profile'] },
      },
      policyServices: {
        extAuthz: { addresses: [`127.0.0.1:${authzA}`, `127.0.0.1:${authzB}`], timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s' },
        threatDetector: { address: `127.0.0.1:${threat}`, healthCheck: fastHealth },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
      limits: {
        authenticated: [{ per: 'user', limit: 1000, window: '1m' }],
        unauthenticated: [{ per: 'ip', limit: 1000, window: '1m' }],
      },
      routes: [
        { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
        // The demo upstream echoes the body: a large POST is a large download.
        { match: 'POST /api/v1/customer/export', to: 'customer', rewrite: '/export', require: ['read:own_profile'] },
        { id: 'public', match: 'GET /api/v1/public/info', to: 'customer', rewrite: '/info', auth: 'none' },
        // A sign-in backend that refuses every password: its own 401 is what marks a failed login.
        {
          id: 'sign-in',
          match: 'POST /api/v1/auth/login',
          auth: 'none',
          directResponse: { status: 401, body: '{"error":"wrong password"}' },
        },
      ],
      edge: { trustedProxies: ['127.0.0.1/32'] },
      // Per-user thresholds small enough for a test, far above what the other tests' users do.
      threats: {
        loginRoutes: ['sign-in'],
        suspiciousUsage: { calls: 20, limit: 3 },
        dataExfiltration: { megabytes: 0.05 },
        // Short enough to watch it expire; the other tests' sign-ins carry no place.
        geoAnomaly: { for: '20s' },
        flushInterval: '100ms',
      },
    }),
  );
  // The stack waits for Envoy to see the detector healthy before it returns.
  stack = await startStack({ definitionFile, logLevel: 'info' });
  if (!stack.threatDetectorAdminUrl) throw new Error('the stack runs no threat detector for a definition with threats');
  detectorUrl = stack.threatDetectorAdminUrl;
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack);

const attacker = '198.51.100.10';
const bystander = '198.51.100.11';

async function call(
  path: string,
  ip: string,
  token?: string,
  method = 'GET',
  body?: string,
  extraHeaders: Record<string, string> = {},
) {
  const response = await fetch(`${stack.gatewayUrl}${path}`, {
    method,
    ...(body !== undefined ? { body } : {}),
    // identity: the bytes Envoy sends are the body's, not what compression made of them.
    headers: {
      'x-forwarded-for': ip,
      'accept-language': 'en',
      'accept-encoding': 'identity',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...extraHeaders,
    },
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text.startsWith('{') ? JSON.parse(text) : text };
}

async function metric(url: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => pattern.test(line))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
}
const failuresSeen = () => metric(detectorUrl, /^failed_login_attempts\{[^}]*kind="token"/);
const pendingKeys = () => metric(detectorUrl, /^sekisho_threat_pending_keys/);

/**
 * Waits until the detector has seen `failures` token failures and finished acting on them
 * (its Redis counts, and any block it wrote). A flush takes the pending facts first and acts
 * after; flushes run one at a time, so once a later fact (a sentinel failure from an address
 * of its own) has been taken too, the flush that held the earlier ones is done.
 */
async function detectorSettled(failures: number) {
  const taken = (count: number) =>
    waitUntil(`the detector to take ${count} failures into a flush`, 10_000, {}, async () => {
      const [seen, pending] = await Promise.all([failuresSeen(), pendingKeys()]);
      return seen >= count && pending === 0
        ? { done: true, value: undefined }
        : { done: false, detail: `seen ${seen}, pending ${pending}` };
    });
  await taken(failures);
  expect((await call('/api/v1/customer/profile', '203.0.113.250', 'forged-sentinel')).status).toBe(401);
  await taken(failures + 1);
}

const verifications = () =>
  Promise.all(stack.extAuthzAdminUrls.map((url) => metric(url, /^sekisho_ext_authz_token_verifications_total/)));
const blocksHeld = (url: string, kind = 'ip') =>
  metric(url, new RegExp(`^sekisho_ext_authz_threat_blocks_held\\{[^}]*kind="${kind}"`));

/** Both replicas hold `count` blocks of `kind`; the deadline is the "within a second". */
const everyReplicaHolds = (count: number, timeoutMs: number, kind = 'ip') =>
  waitUntil(`every ext-authz replica to hold ${count} ${kind} blocks`, timeoutMs, {}, async () => {
    const held = await Promise.all(stack.extAuthzAdminUrls.map((url) => blocksHeld(url, kind)));
    return held.every((n) => n === count) ? { done: true, value: undefined } : { done: false, detail: held.join(', ') };
  });

function admin(...args: string[]) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'ext-authz/src/admin/cli.ts', ...args, '--redis-url', stack.redis.url],
      { cwd: repoRoot, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('threat detection through Envoy, the detector and two ext-authz replicas', () => {
  it('blocks the IP after six failed authentications, on every route, while another IP is served', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('u-bystander');
    expect((await call('/api/v1/customer/profile', attacker, token)).status).toBe(200);

    for (let i = 0; i < 5; i++) {
      const refused = await call('/api/v1/customer/profile', attacker, `forged-${i}`);
      expect(refused.status).toBe(401);
      expect(refused.body.error.code).toBe('INVALID_TOKEN');
    }
    // Five are not more than five: once the detector has acted on them, nothing is blocked.
    await detectorSettled(5);
    expect(await Promise.all(stack.extAuthzAdminUrls.map((url) => blocksHeld(url)))).toEqual([0, 0]);

    expect((await call('/api/v1/customer/profile', attacker, 'forged-5')).status).toBe(401);
    await everyReplicaHolds(1, 10_000);

    const before = await verifications();
    for (let i = 0; i < 4; i++) {
      for (const path of ['/api/v1/customer/profile', '/api/v1/public/info']) {
        const refused = await call(path, attacker, token);
        expect(refused.status).toBe(403);
        expect(refused.body).toMatchObject({ success: false, error: { code: 'IP_BLOCKED' }, data: null });
      }
    }
    // A blocked address costs no token work on either replica.
    expect(await verifications()).toEqual(before);
    expect(
      await metric(
        stack.extAuthzAdminUrls[0] ?? '',
        /^sekisho_ext_authz_threat_refusals_total\{[^}]*rule="brute_force"/,
      ),
    ).toBeGreaterThan(0);

    expect((await call('/api/v1/customer/profile', bystander, token)).status).toBe(200);
    expect((await call('/api/v1/public/info', bystander)).status).toBe(200);
  });

  it('keeps the block across an ext-authz restart', async () => {
    showLogsOnFailure();
    await stack.stopService('ext-authz');
    await stack.startService('ext-authz');
    await everyReplicaHolds(1, 10_000);
    expect((await call('/api/v1/public/info', attacker)).body.error?.code).toBe('IP_BLOCKED');
  });

  it('unblock-ip lifts it on both replicas within a second', async () => {
    showLogsOnFailure();
    const result = await admin('unblock-ip', attacker);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`lifted ip:${attacker}`);
    await everyReplicaHolds(0, 1_000);
    for (let i = 0; i < 4; i++) expect((await call('/api/v1/public/info', attacker)).status).toBe(200);
  });

  it("blocks an IP after six refused sign-ins, judged by the login route's own 401", async () => {
    showLogsOnFailure();
    const guesser = '198.51.100.12';
    for (let i = 0; i < 6; i++) expect((await call('/api/v1/auth/login', guesser, undefined, 'POST')).status).toBe(401);
    await everyReplicaHolds(1, 10_000);
    expect((await call('/api/v1/public/info', guesser)).body.error?.code).toBe('IP_BLOCKED');
    expect(await metric(detectorUrl, /^failed_login_attempts\{[^}]*kind="login"/)).toBeGreaterThanOrEqual(6);
    expect((await call('/api/v1/public/info', bystander)).status).toBe(200);
  });

  it('limits a user past 20 calls to 3 a minute on each replica (429 with Retry-After), others unaffected', async () => {
    showLogsOnFailure();
    const busy = await stack.mintToken('u-busy');
    for (let i = 0; i < 21; i++) expect((await call('/api/v1/customer/profile', bystander, busy)).status).toBe(200);
    await everyReplicaHolds(1, 10_000, 'limit');
    const statuses: number[] = [];
    let limited: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 10; i++) {
      const response = await call('/api/v1/customer/profile', bystander, busy);
      statuses.push(response.status);
      if (response.status === 429) limited = response;
    }
    // Each replica lets 3 through in its minute: at most 6 of the 10 are served.
    expect(statuses.filter((status) => status === 200).length).toBeLessThanOrEqual(6);
    expect(limited?.body.error.code).toBe('RATE_LIMIT_EXCEEDED');
    expect(Number(limited?.headers.get('retry-after'))).toBeGreaterThan(0);
    const other = await stack.mintToken('u-calm');
    expect((await call('/api/v1/customer/profile', bystander, other)).status).toBe(200);
  });

  it('blocks a user past 50 KB downloaded, from every address, until unblock-user', async () => {
    showLogsOnFailure();
    const hoarder = await stack.mintToken('u-hoarder');
    expect((await call('/api/v1/customer/export', bystander, hoarder, 'POST', 'x'.repeat(60_000))).status).toBe(200);
    await everyReplicaHolds(1, 10_000, 'user');
    for (const ip of [bystander, '192.0.2.50']) {
      const refused = await call('/api/v1/customer/profile', ip, hoarder);
      expect(refused.status).toBe(403);
      expect(refused.body.error.code).toBe('USER_BLOCKED');
    }
    const result = await admin('unblock-user', 'u-hoarder');
    expect(result.code, result.stderr).toBe(0);
    await everyReplicaHolds(0, 1_000, 'user');
    expect((await call('/api/v1/customer/profile', bystander, hoarder)).status).toBe(200);
  });

  it('a sign-in 9,000 km from the usual place needs a second factor on both replicas, until it expires', async () => {
    showLogsOnFailure();
    // The loopback client is the trusted proxy (edge.trustedProxies), so its CDN headers stand.
    const tokyo = { 'cf-iplatitude': '35.6895', 'cf-iplongitude': '139.6917' };
    const london = { 'cf-iplatitude': '51.5074', 'cf-iplongitude': '-0.1278' };
    const signedIn = (secondsAgo: number, secondFactor?: string) =>
      stack.mintToken('u-traveller', {
        authTime: new Date(Date.now() - secondsAgo * 1000),
        ...(secondFactor
          ? {
              claims: {
                firebase: { identities: {}, sign_in_provider: 'password', sign_in_second_factor: secondFactor },
              },
            }
          : {}),
      });
    const signIns = (result: string) =>
      metric(detectorUrl, new RegExp(`^sekisho_threat_sign_ins_total\\{[^}]*result="${result}"`));
    const judged = (result: string, count: number) =>
      waitUntil(`the detector to judge ${count} ${result} sign-ins`, 10_000, {}, async () => {
        const seen = await signIns(result);
        return seen >= count ? { done: true, value: undefined } : { done: false, detail: `${seen}` };
      });
    const profile = (token: string, headers: Record<string, string> = {}) =>
      call('/api/v1/customer/profile', bystander, token, 'GET', undefined, headers);

    const atHome = await signedIn(120);
    expect((await profile(atHome, tokyo)).status).toBe(200);
    await judged('first', 1);
    const abroad = await signedIn(60);
    // The far sign-in itself was served: the detector acts on what Envoy already answered.
    expect((await profile(abroad, london)).status).toBe(200);
    await everyReplicaHolds(1, 10_000, 'auth');
    for (let i = 0; i < 4; i++) {
      for (const token of [abroad, atHome]) {
        const refused = await profile(token, tokyo);
        expect(refused.status).toBe(401);
        expect(refused.body).toMatchObject({ success: false, error: { code: 'ADDITIONAL_AUTH_REQUIRED' }, data: null });
        expect(refused.headers.get('www-authenticate')).toContain('insufficient_user_authentication');
      }
    }
    expect(
      await metric(
        stack.extAuthzAdminUrls[1] ?? '',
        /^sekisho_ext_authz_threat_refusals_total\{[^}]*rule="geo_anomaly"/,
      ),
    ).toBeGreaterThan(0);
    expect(await metric(detectorUrl, /^security_events\{[^}]*rule="geo_anomaly",severity="medium"/)).toBe(1);
    // Someone else is not affected.
    expect((await profile(await stack.mintToken('u-stay-at-home'), tokyo)).status).toBe(200);

    // A device an operator registered passes; the header alone did not.
    const device = { ...tokyo, 'x-device-id': 'e2e-laptop-0123456789' };
    expect((await profile(atHome, device)).status).toBe(401);
    const trusted = await admin('trust-device', 'u-traveller', device['x-device-id']);
    expect(trusted.code, trusted.stderr).toBe(0);
    expect(trusted.stdout).toContain('state in force was updated');
    await waitUntil('the trusted device to reach the replicas', 5_000, {}, async () => {
      const status = (await profile(atHome, device)).status;
      return status === 200 ? { done: true, value: undefined } : { done: false, detail: `${status}` };
    });
    for (let i = 0; i < 3; i++) expect((await profile(atHome, device)).status).toBe(200);
    expect((await profile(atHome, tokyo)).status).toBe(401);

    // A second factor after the far sign-in passes at once, and the detector lifts the state.
    const verified = await signedIn(30, 'phone');
    for (let i = 0; i < 2; i++) expect((await profile(verified, london)).status).toBe(200);
    await everyReplicaHolds(0, 10_000, 'auth');
    expect((await profile(abroad, london)).status).toBe(200);

    // Another far sign-in, without a second factor: refused, then served once the state expired.
    // London is usual now (shown with a second factor), so the far place is Sydney.
    const sydney = { 'cf-iplatitude': '-33.8688', 'cf-iplongitude': '151.2093' };
    const inForce = () =>
      Promise.all(
        stack.extAuthzAdminUrls.map(
          async (url) =>
            ((await (await fetch(`${url}/status`)).json()) as { threats: { blocks_in_force: number } }).threats
              .blocks_in_force,
        ),
      );
    const before = await inForce();
    const again = await signedIn(10);
    expect((await profile(again, sydney)).status).toBe(200);
    await everyReplicaHolds(1, 10_000, 'auth');
    expect((await profile(again, sydney)).body.error?.code).toBe('ADDITIONAL_AUTH_REQUIRED');
    // Each replica's own clock ends it (no request needed, so the user's call count stays low).
    await waitUntil('the state to expire on both replicas (20 s)', 40_000, {}, async () => {
      const held = await inForce();
      return held.every((count, index) => count === before[index])
        ? { done: true, value: undefined }
        : { done: false, detail: `${held.join(', ')} (before: ${before.join(', ')})` };
    });
    for (let i = 0; i < 2; i++) expect((await profile(again, sydney)).status).toBe(200);
  });

  it("never takes a direct client's own location headers: its far sign-in is unlocated, not an anomaly", async () => {
    showLogsOnFailure();
    const unlocated = () => metric(detectorUrl, /^sekisho_threat_sign_ins_total\{[^}]*result="unlocated"/);
    const judgedFirst = () => metric(detectorUrl, /^sekisho_threat_sign_ins_total\{[^}]*result="first"/);
    const firsts = await judgedFirst();
    const home = await stack.mintToken('u-direct', { authTime: new Date(Date.now() - 60_000) });
    expect(
      (
        await call('/api/v1/customer/profile', bystander, home, 'GET', undefined, {
          'cf-iplatitude': '35.6895',
          'cf-iplongitude': '139.6917',
        })
      ).status,
    ).toBe(200);
    await waitUntil('the home sign-in judged', 10_000, {}, async () =>
      (await judgedFirst()) > firsts ? { done: true, value: undefined } : { done: false, detail: 'not yet' },
    );
    const before = await unlocated();
    const token = await stack.mintToken('u-direct', { authTime: new Date(Date.now() - 30_000) });
    // 127.0.0.3 is not edge.trustedProxies: its CDN headers are removed by the first filter.
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: new URL(stack.gatewayUrl).port,
          path: '/api/v1/customer/profile',
          localAddress: '127.0.0.3',
          agent: false,
          headers: { authorization: `Bearer ${token}`, 'cf-iplatitude': '51.5074', 'cf-iplongitude': '-0.1278' },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(200);
    await waitUntil('the direct sign-in judged unlocated', 10_000, {}, async () => {
      const now = await unlocated();
      return now > before ? { done: true, value: undefined } : { done: false, detail: `${now}` };
    });
    expect((await call('/api/v1/customer/profile', bystander, token)).status).toBe(200);
  });

  it("writes Envoy's stdout line of each request in the reference's log structure, the user from ext-authz", async () => {
    showLogsOnFailure();
    const ip = '192.0.2.80';
    const token = await stack.mintToken('u-logged');
    const send = async (authorization: string, path = '/api/v1/customer/profile') => {
      const response = await fetch(`${stack.gatewayUrl}${path}?access_token=${token}&x=1`, {
        headers: {
          'x-forwarded-for': ip,
          'user-agent': 'sekisho-e2e/1.0',
          authorization,
          // A client's own claim to be someone: never what the log says.
          'x-sekisho-user-id': 'u-spoofed',
        },
      });
      await response.arrayBuffer();
      return { status: response.status, requestId: response.headers.get('x-request-id') ?? 'none' };
    };
    const served = await send(`Bearer ${token}`);
    const refused = await send('Bearer forged');
    // No route: a client error (one logger per class, each behind its status filter).
    const unrouted = await send(`Bearer ${token}`, '/no/such/route');
    expect([served.status, refused.status, unrouted.status]).toEqual([200, 401, 404]);
    const lineOf = (requestId: string) =>
      stack
        .logs()
        .split('\n')
        .filter((line) => line.includes(requestId) && line.includes('"route_name"'))
        .map((line) => JSON.parse(line.slice(line.indexOf('{'))) as Record<string, unknown>);
    const [servedLine, refusedLine, unroutedLine] = await waitUntil(
      "Envoy's access log lines",
      30_000,
      {},
      async () => {
        // Exactly one line each.
        const lines = [lineOf(served.requestId), lineOf(refused.requestId), lineOf(unrouted.requestId)];
        return lines.every((found) => found.length === 1)
          ? { done: true, value: lines.map((found) => found[0] ?? {}) }
          : { done: false, detail: lines.map((found) => found.length).join(', ') };
      },
    );
    const common = {
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      ip_address: ip,
      user_agent: 'sekisho-e2e/1.0',
      endpoint: '/api/v1/customer/profile',
      method: 'GET',
      response_time: expect.any(Number),
    };
    expect(servedLine).toMatchObject({
      ...common,
      level: 'INFO',
      category: 'technical',
      event_type: 'http_served',
      correlation_id: served.requestId,
      request_id: served.requestId,
      user_id: 'u-logged',
      status_code: 200,
    });
    expect(refusedLine).toMatchObject({
      ...common,
      level: 'WARN',
      category: 'security',
      event_type: 'http_unauthenticated',
      correlation_id: refused.requestId,
      request_id: refused.requestId,
      user_id: null,
      status_code: 401,
    });
    expect(unroutedLine).toMatchObject({
      level: 'WARN',
      category: 'technical',
      event_type: 'http_client_error',
      endpoint: '/no/such/route',
      status_code: 404,
    });
    // No token (header or query) in any line.
    for (const line of [servedLine, refusedLine, unroutedLine])
      expect(JSON.stringify(line)).not.toMatch(/eyJ|forged|access_token/);
  });

  it('a restarted detector loses no block and detects again', async () => {
    showLogsOnFailure();
    const held = await blocksHeld(stack.extAuthzAdminUrls[0] ?? '');
    expect(held).toBeGreaterThan(0);
    await stack.stopService('threat-detector');
    await stack.startService('threat-detector');
    await everyReplicaHolds(held, 1_000);
    // Envoy drops what it logs while the detector is away; once it sees it healthy again, its
    // stream reopens with the next entry.
    await waitUntil('Envoy to see the restarted detector healthy', 30_000, {}, async () => {
      const clusters = await (await fetch(`${stack.envoyAdminUrl}/clusters`)).text();
      const flags = clusters
        .split('\n')
        .filter((line) => line.startsWith('sekisho_threat_detector::') && line.includes('::health_flags::'));
      return flags.length === 1 && flags[0]?.endsWith('::healthy')
        ? { done: true, value: undefined }
        : { done: false, detail: flags.join(' | ') || 'no endpoint yet' };
    });
    const attacker3 = '198.51.100.15';
    for (let i = 0; i < 6; i++)
      expect((await call('/api/v1/customer/profile', attacker3, `forged-${i}`)).status).toBe(401);
    await everyReplicaHolds(held + 1, 10_000);
    expect((await call('/api/v1/public/info', attacker3)).body.error?.code).toBe('IP_BLOCKED');
  });

  it('with Redis down: the blocks held stay enforced, detection pauses, nobody else is refused', async () => {
    showLogsOnFailure();
    const control = stack.redis.control;
    if (!control) throw new Error('this test needs the stack to spawn redis-server (unset REDIS_URL)');
    const attacker2 = '198.51.100.13';
    // The sign-in guesser's block is still in force.
    const held = await blocksHeld(stack.extAuthzAdminUrls[0] ?? '');
    for (let i = 0; i < 6; i++)
      expect((await call('/api/v1/customer/profile', attacker2, `forged-${i}`)).status).toBe(401);
    await everyReplicaHolds(held + 1, 10_000);
    await control.down();
    try {
      for (let i = 0; i < 4; i++)
        expect((await call('/api/v1/public/info', attacker2)).body.error?.code).toBe('IP_BLOCKED');
      const token = await stack.mintToken('u-bystander');
      expect((await call('/api/v1/customer/profile', bystander, token)).status).toBe(200);
      expect((await call('/api/v1/auth/login', '198.51.100.14', undefined, 'POST')).status).toBe(401);
      await waitUntil('the detector to pause', 10_000, {}, async () => {
        const paused = await metric(detectorUrl, /^sekisho_threat_detection_paused/);
        return paused === 1 ? { done: true, value: undefined } : { done: false, detail: `paused ${paused}` };
      });
    } finally {
      await control.up();
    }
    // The restarted redis-server is empty (no persistence in tests): the detector resumes counting.
    await waitUntil('the detector to resume', 10_000, {}, async () => {
      const paused = await metric(detectorUrl, /^sekisho_threat_detection_paused/);
      return paused === 0 ? { done: true, value: undefined } : { done: false, detail: `paused ${paused}` };
    });
  });
});
