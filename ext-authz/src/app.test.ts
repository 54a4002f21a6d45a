import { credentials } from '@grpc/grpc-js';
import { createFirebaseKeyServer, type FirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import {
  AuthorizationClient,
  CheckRequest,
  type CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { authzContextKeys, identityHeaders, policyTypeUrls } from '@sekisho/service-kit/contract';
import type { GrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger } from '@sekisho/service-kit/logger';
import { startPolicyServer } from '@sekisho/service-kit/testing/policy-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExtAuthzApp, startExtAuthzApp } from './app';
import { loadExtAuthzConfig } from './config';

// The whole service over real sockets: Check over gRPC with a grpc-js client of the
// generated AuthorizationService, the AuthzPolicy delivered over ADS by a small real
// gRPC control plane (service-kit's policy client on the ext-authz side), Firebase keys
// fetched over HTTP from devstack's key server, and the admin endpoints over HTTP.

const projectId = 'salon-test';
const policy = AuthzPolicy.fromPartial({
  firebase: { projectId },
  groupClaim: 'tier',
  defaultGroup: 'basic_customer',
  groups: {
    basic_customer: { permissions: ['read:own_profile'] },
    verified_customer: { permissions: ['read:own_profile', 'create:appointments'] },
  },
});

/** A control plane reduced to what ext-authz needs: one ADS stream, AuthzPolicies pushed by the test. */
async function controlPlane() {
  const ads = await startPolicyServer();
  return {
    server: ads.server,
    requests: ads.requests,
    connected: ads.connected,
    push: (version: string, authz: AuthzPolicy) =>
      ads.push(policyTypeUrls.authz, version, AuthzPolicy.encode(authz).finish()),
  };
}

async function until<T>(probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

let keys: FirebaseKeyServer;
let ads: Awaited<ReturnType<typeof controlPlane>>;
let app: ExtAuthzApp;
let client: AuthorizationClient;
let adsServer: GrpcServer;

beforeAll(async () => {
  keys = await createFirebaseKeyServer();
  ads = await controlPlane();
  adsServer = ads.server;
  app = await startExtAuthzApp(
    loadExtAuthzConfig({
      EXT_AUTHZ_GRPC_PORT: '0',
      EXT_AUTHZ_ADMIN_PORT: '0',
      EXT_AUTHZ_XDS_ADDRESS: `127.0.0.1:${adsServer.port}`,
      EXT_AUTHZ_FIREBASE_CERTS_URL: keys.url,
      EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true',
      EXT_AUTHZ_KEYS_UNKNOWN_KID_INTERVAL: '1s',
      LOG_LEVEL: 'silent',
    }),
  );
  client = new AuthorizationClient(`127.0.0.1:${app.grpcPort}`, credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await app?.close();
  await adsServer?.close(100);
  await keys?.close();
});

function callCheck(opts: { token?: string; permissions?: string; auth?: string; headers?: Record<string, string> }) {
  const request = CheckRequest.fromPartial({
    attributes: {
      source: { address: { socketAddress: { address: '203.0.113.7', portValue: 40000 } } },
      contextExtensions: {
        [authzContextKeys.routeId]: 'r1',
        ...(opts.permissions !== undefined ? { [authzContextKeys.permissions]: opts.permissions } : {}),
        ...(opts.auth !== undefined ? { [authzContextKeys.auth]: opts.auth } : {}),
      },
      request: {
        http: {
          method: 'GET',
          path: '/api/v1/customer/profile',
          headers: {
            'x-request-id': 'req-grpc',
            ...(opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {}),
            ...opts.headers,
          },
        },
      },
    },
  });
  return new Promise<CheckResponse>((resolve, reject) => {
    client.check(request, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

const admin = async (path: string) => {
  const response = await fetch(`http://127.0.0.1:${app.adminPort}${path}`);
  return { status: response.status, text: await response.text() };
};

const mint = (claims: Record<string, unknown> = {}) =>
  mintIdToken(keys.signingKey, { projectId, uid: 'user-1', email: 'taro@example.com', claims });

const okHeaders = (response: CheckResponse) =>
  Object.fromEntries((response.okResponse?.headers ?? []).map((h) => [h.header?.key, h.header?.value]));

describe('ext-authz over gRPC', () => {
  it('denies with 503 and is not ready before the control plane sent a policy', async () => {
    await until(() => app.keyStore.hasKeys());
    const response = await callCheck({ token: await mint() });
    expect(response.status?.code).toBe(14);
    expect(response.deniedResponse?.status?.code).toBe(503);
    expect((await admin('/readyz')).status).toBe(503);
  });

  it('becomes ready once the policy arrives over ADS and ACKs it', async () => {
    await until(() => ads.connected() && ads.requests.length > 0);
    const nonce = ads.push('v1', policy);
    await until(() => ads.requests.find((r) => r.responseNonce === nonce));
    const ack = ads.requests.find((r) => r.responseNonce === nonce);
    expect(ack?.versionInfo).toBe('v1');
    expect(ack?.errorDetail).toBeUndefined();
    await until(() => app.isReady());
    expect((await admin('/readyz')).status).toBe(200);
    expect(JSON.parse((await admin('/status')).text)).toMatchObject({
      policy_version: 'v1',
      project_id: projectId,
      sign_in_providers: null,
      tenants: [],
      customer_id_claim: null,
      keys: { count: 1, last_refresh_ok: true },
    });
  });

  it('allows a valid token with identity headers for the upstream and dynamic metadata', async () => {
    const response = await callCheck({
      token: await mint({ tier: 'verified_customer' }),
      permissions: 'create:appointments',
      headers: { [identityHeaders.group]: 'admin' },
    });
    expect(response.status?.code).toBe(0);
    expect(okHeaders(response)).toMatchObject({
      [identityHeaders.userId]: 'user-1',
      [identityHeaders.email]: 'taro@example.com',
      [identityHeaders.group]: 'verified_customer',
      [identityHeaders.permissions]: 'read:own_profile,create:appointments',
    });
    expect(response.okResponse?.headersToRemove).toEqual([identityHeaders.phone]);
    expect(response.dynamicMetadata).toEqual({
      user_id: 'user-1',
      group: 'verified_customer',
      auth_time: expect.stringMatching(/^\d+$/),
    });
  });

  it.each([
    { name: 'without a token', opts: {}, http: 401, rpc: 16, code: 'MISSING_TOKEN' },
    { name: 'with garbage', opts: { token: 'garbage' }, http: 401, rpc: 16, code: 'INVALID_TOKEN' },
    {
      name: 'without the permission',
      opts: { permissions: 'create:appointments' },
      http: 403,
      rpc: 7,
      code: 'INSUFFICIENT_PERMISSIONS',
    },
  ])('denies a request $name', async ({ opts, http, rpc, code }) => {
    const token = 'token' in opts ? opts.token : 'permissions' in opts ? await mint() : undefined;
    const response = await callCheck({ ...opts, ...(token !== undefined ? { token } : {}) });
    expect(response.status?.code).toBe(rpc);
    expect(response.deniedResponse?.status?.code).toBe(http);
    const body = JSON.parse(response.deniedResponse?.body ?? '');
    expect(body).toMatchObject({ success: false, error: { code, correlation_id: 'req-grpc' }, data: null });
  });

  it('lets an auth: none route through and strips identity headers a client sent', async () => {
    const response = await callCheck({ auth: 'none', headers: { [identityHeaders.userId]: 'someone-else' } });
    expect(response.status?.code).toBe(0);
    expect(response.okResponse?.headersToRemove).toContain(identityHeaders.userId);
  });

  it('accepts tokens of a rotated key after one refetch', async () => {
    const before = keys.requests();
    await keys.rotate();
    const response = await callCheck({ token: await mint() });
    expect(response.status?.code).toBe(0);
    expect(keys.requests()).toBe(before + 1);
  });

  it('NACKs an invalid policy and keeps the one in force', async () => {
    const nonce = ads.push('v2', AuthzPolicy.fromPartial({ ...policy, firebase: { projectId: '' } }));
    const nack = await until(() => ads.requests.find((r) => r.responseNonce === nonce));
    expect(nack.errorDetail?.message).toContain('project_id');
    expect(nack.versionInfo).toBe('v1');
    expect((await callCheck({ token: await mint() })).status?.code).toBe(0);
    expect(JSON.parse((await admin('/status')).text).policy_version).toBe('v1');
  });

  it('NACKs a policy that counts per-user limits in the Check when it has no Redis, naming the setting', async () => {
    const userLimits = {
      domain: 'sekisho',
      rules: [
        { id: 'authenticated/user/60s', match: [{ key: 'user', value: '' }], requestsPerWindow: 5, windowSeconds: 60 },
      ],
    };
    const nonce = ads.push('v3', AuthzPolicy.fromPartial({ ...policy, userLimits }));
    const nack = await until(() => ads.requests.find((r) => r.responseNonce === nonce));
    expect(nack.errorDetail?.message).toContain('EXT_AUTHZ_REDIS_URL');
    expect(nack.errorDetail?.message).toContain('perUserLimits');
    expect(nack.versionInfo).toBe('v1');
    expect((await callCheck({ token: await mint() })).status?.code).toBe(0);
  });

  it('removes any x-sekisho- header a client sent, not only the identity ones', async () => {
    const response = await callCheck({ token: await mint(), headers: { 'x-sekisho-tenant': 'other-salon' } });
    expect(response.status?.code).toBe(0);
    expect(response.okResponse?.headersToRemove).toContain('x-sekisho-tenant');
  });

  it('exposes its metrics', async () => {
    const { text } = await admin('/metrics');
    expect(text).toMatch(/sekisho_ext_authz_checks_total\{result="allow",code="OK",service="ext-authz"\} \d+/);
    expect(text).toContain('sekisho_ext_authz_policy_info{version="v1",project_id="salon-test",service="ext-authz"} 1');
    expect(text).toContain('sekisho_ext_authz_policy_updates_total{result="rejected",service="ext-authz"} 2');
    expect(text).toContain('sekisho_ext_authz_keys_loaded{service="ext-authz"} 2');
    expect(text).toContain('sekisho_ext_authz_keys_last_refresh_ok{service="ext-authz"} 1');
    expect(text).toContain('sekisho_ext_authz_emulator_mode{service="ext-authz"} 0');
    expect(text).toMatch(
      /sekisho_ext_authz_key_refreshes_total\{result="ok",trigger="unknown_kid",service="ext-authz"\} 1/,
    );
  });

  it('answers a CheckRequest that does not decode with INTERNAL, and keeps serving', async () => {
    const raw = (bytes: number[]) =>
      new Promise<{ code: number; details: string }>((resolve) => {
        client.makeUnaryRequest(
          '/envoy.service.auth.v3.Authorization/Check',
          (message: Buffer) => message,
          (message: Buffer) => message,
          Buffer.from(bytes),
          (error) => resolve({ code: error?.code ?? 0, details: error?.details ?? '' }),
        );
      });
    // attributes (field 1) of 5 bytes with 2 present; a varint of eleven bytes; wire type 7.
    for (const bytes of [[0x0a, 0x05, 0x22, 0x01], [0x0a, ...Array(10).fill(0xff), 0x01], [0x0f]]) {
      const answer = await raw(bytes);
      expect(answer.code).toBe(13);
      expect(answer.details).toMatch(/could not be decoded|deserializ/i);
    }
    expect((await callCheck({ token: await mint(), permissions: 'read:own_profile' })).status?.code).toBe(0);
  });

  it('refuses an unsigned token of the Auth emulator outside the emulator mode', async () => {
    const [, payload] = (await mint()).split('.');
    const unsigned = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${payload}.`;
    const response = await callCheck({ token: unsigned });
    expect(response.deniedResponse?.status?.code).toBe(401);
    expect(JSON.parse((await admin('/readyz')).text).details.auth_emulator).toEqual({ enabled: false });
  });

  // Last: it starts the shutdown.
  it('stops reporting ready as soon as shutdown begins, before the gRPC server drains', async () => {
    expect((await admin('/readyz')).status).toBe(200);
    expect(app.shutdownSteps[0]?.name).toBe('readiness');
    await app.shutdownSteps[0]?.run();
    expect((await admin('/readyz')).status).toBe(503);
    expect((await callCheck({ token: await mint() })).status?.code).toBe(0);
  });
});

// The Auth emulator mode in a second instance: unsigned tokens of the demo- project accepted,
// said loudly at start-up, in /readyz, /status and a metric; ready with no keys at all (the
// keys URL here answers nothing), as on an offline laptop with only the emulator.
describe('ext-authz in the Auth emulator mode', () => {
  const demoProject = 'demo-salon';
  const lines: string[] = [];
  let emulatorApp: ExtAuthzApp;
  let emulatorClient: AuthorizationClient;

  beforeAll(async () => {
    emulatorApp = await startExtAuthzApp(
      loadExtAuthzConfig({
        EXT_AUTHZ_GRPC_PORT: '0',
        EXT_AUTHZ_ADMIN_PORT: '0',
        EXT_AUTHZ_FIREBASE_CERTS_URL: 'http://127.0.0.1:1/keys',
        EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true',
        EXT_AUTHZ_FIREBASE_AUTH_EMULATOR_HOST: '127.0.0.1:9099',
        NODE_ENV: 'development',
      }),
      {
        subscribe: false,
        logger: createLogger('ext-authz', {
          level: 'info',
          destination: { write: (line: string) => lines.push(line) },
        }),
      },
    );
    emulatorClient = new AuthorizationClient(`127.0.0.1:${emulatorApp.grpcPort}`, credentials.createInsecure());
  });

  afterAll(async () => {
    emulatorClient?.close();
    await emulatorApp?.close();
  });

  const emulatorAdmin = async (path: string) =>
    (await fetch(`http://127.0.0.1:${emulatorApp.adminPort}${path}`)).text();
  const check = (token: string) =>
    new Promise<CheckResponse>((resolve, reject) => {
      const request = CheckRequest.fromPartial({
        attributes: {
          contextExtensions: { [authzContextKeys.routeId]: 'r1', [authzContextKeys.permissions]: 'read:own_profile' },
          request: { http: { method: 'GET', path: '/p', headers: { authorization: `Bearer ${token}` } } },
        },
      });
      emulatorClient.check(request, (error, response) => (error ? reject(error) : resolve(response)));
    });
  /** What the emulator issues: a Firebase-format payload, alg none, no signature. */
  const unsigned = async (project: string, claims: Record<string, unknown> = {}) => {
    const [, payload] = (await mintIdToken(keys.signingKey, { projectId: project, uid: 'emu-1', claims })).split('.');
    return `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${payload}.`;
  };

  it('says so loudly at start-up', () => {
    const record = lines.map((line) => JSON.parse(line)).find((r) => r.event_type === 'emulator_mode');
    expect(record).toMatchObject({ level: 'WARN', emulator_host: '127.0.0.1:9099' });
    expect(record.message).toContain('AUTH EMULATOR MODE');
  });

  it('accepts an unsigned token of the demo- project, ready without any keys, and shows the mode', async () => {
    emulatorApp.applyPolicy(AuthzPolicy.fromPartial({ ...policy, firebase: { projectId: demoProject } }), 'e1');
    expect(emulatorApp.keyStore.hasKeys()).toBe(false);
    await until(() => emulatorApp.isReady());
    const response = await check(await unsigned(demoProject));
    expect(response.status?.code).toBe(0);
    expect(okHeaders(response)[identityHeaders.userId]).toBe('emu-1');
    // Claims still count: another project's token is refused.
    expect((await check(await unsigned('demo-other'))).deniedResponse?.status?.code).toBe(401);

    const expected = { enabled: true, host: '127.0.0.1:9099', accepts_unsigned_tokens: true };
    expect(JSON.parse(await emulatorAdmin('/readyz'))).toMatchObject({
      status: 'ready',
      details: { auth_emulator: expected },
    });
    expect(JSON.parse(await emulatorAdmin('/status')).auth_emulator).toEqual(expected);
    expect(await emulatorAdmin('/metrics')).toContain('sekisho_ext_authz_emulator_mode{service="ext-authz"} 1');
  });

  it('refuses unsigned tokens, and warns, when the policy names a project that is not a demo- one', async () => {
    emulatorApp.applyPolicy(AuthzPolicy.fromPartial({ ...policy, firebase: { projectId: 'salon-prod' } }), 'e2');
    expect((await check(await unsigned('salon-prod'))).deniedResponse?.status?.code).toBe(401);
    expect(lines.some((line) => line.includes('"event_type":"emulator_mode_project"'))).toBe(true);
  });

  it('writes the denial log summary of the running window in shutdown, right after gRPC stops', async () => {
    // The default bound: 20 records per cause and client per window; these 25 leave 5 out.
    for (let i = 0; i < 25; i++) await check('not-a-token');
    const names = emulatorApp.shutdownSteps.map((step) => step.name);
    expect(names.indexOf('denial log')).toBe(names.indexOf('grpc') + 1);
    expect(lines.some((line) => line.includes('denial_logs_dropped'))).toBe(false);
    await emulatorApp.shutdownSteps.find((step) => step.name === 'denial log')?.run();
    const summary = lines.map((line) => JSON.parse(line)).find((r) => r.event_type === 'denial_logs_dropped');
    expect(summary).toMatchObject({ level: 'WARN', dropped: { 'failed_auth:malformed': 5 } });
  });
});
