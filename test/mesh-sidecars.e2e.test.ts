// The mesh with real Envoys: one definition, one control plane (in this process, its mesh CA
// the product's MeshCa signing with a CA made by openssl for the run, issuing 8-second
// certificates renewed at half-life so they rotate during the tests), the ingress Envoy, a
// sidecar Envoy for customer and one for appointment (each its own view, sidecar:<service>,
// and its own certificate over SDS), ext-authz run from its bundle as its image runs it,
// ext-authz verifying the end user's ID token, and two demo apps: customer calls appointment
// through its sidecar's outbound listener. Proves: the call chain works with the end user's
// identity arriving at both apps; a caller the policy does not allow gets 403; plaintext, no
// client certificate and a certificate of another CA are refused in the handshake; identity
// headers a client sends from outside never reach an app; certificates rotating during
// continuous calls fail none of them.
import type { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CallResponse,
  type DemoUpstream,
  type EchoResponse,
  startDemoUpstream,
} from '@sekisho/demo-upstream/server';
import { buildServices, distEntry, productionNodeEnv, productionNodeFlags } from '@sekisho/devstack/build';
import { type EnvoyHandle, resolveEnvoyBinary, startEnvoy } from '@sekisho/devstack/envoy';
import { createFirebaseKeyServer, type FirebaseKeyServer, mintIdToken } from '@sekisho/devstack/firebase-keys';
import { freePort, type ManagedProcess, spawnProcess } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { identityHeaders } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type ControlPlane, configSchema, startControlPlane } from '../control-plane/src/main';
import { MeshCa } from '../control-plane/src/mesh/ca';
import { spiffeIdOf } from '../control-plane/src/mesh/contract';
import { createMeshPki, type IssuedFiles, type MeshPki, requireOpenssl } from './mesh-pki';
import { writeDefinitionFile } from './support';

const trustDomain = 'sekisho.test';
const customerId = spiffeIdOf(trustDomain, 'salon', 'customer');
const appointmentId = spiffeIdOf(trustDomain, 'salon', 'appointment');

let dir: string;
let pki: MeshPki;
let controlPlane: ControlPlane | undefined;
let meshCa: MeshCa | undefined;
/** Workload certificates' lifetime: short enough for several rotations in one test. */
const certificateTtlMs = 8_000;
let keyServer: FirebaseKeyServer | undefined;
const envoys: EnvoyHandle[] = [];
const processes: ManagedProcess[] = [];
const apps: DemoUpstream[] = [];
let gateway = '';
const ports = { customerIn: 0, customerOut: 0, appointmentIn: 0, appointmentOut: 0 };

/** An HTTPS request straight to a sidecar's inbound listener, as a mesh workload (or impostor) would send it. */
function meshRequest(
  port: number,
  path: string,
  opts: {
    client?: Pick<IssuedFiles, 'certificatePem' | 'privateKeyPem'>;
    method?: string;
    headers?: Record<string, string>;
  },
): Promise<{ status: number; body: string; peer: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        headers: opts.headers,
        ca: pki.caPem,
        ...(opts.client ? { cert: opts.client.certificatePem, key: opts.client.privateKeyPem } : {}),
        // The sidecar's certificate names a workload (URI SAN), not a host: checked below instead.
        checkServerIdentity: () => undefined,
        agent: false,
      },
      (response) => {
        const certificate =
          response.socket && 'getPeerX509Certificate' in response.socket
            ? (
                response.socket as unknown as { getPeerX509Certificate(): X509Certificate | undefined }
              ).getPeerX509Certificate()
            : undefined;
        const peer = certificate?.subjectAltName ?? '';
        const serial = certificate?.serialNumber ?? '';
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString(), peer, serial }),
        );
      },
    );
    outgoing.on('error', reject);
    outgoing.end();
  });
}

/** A plaintext request to a loopback listener with the Host header given (as an app sends it). */
function plainRequest(port: number, path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

beforeAll(async () => {
  requireOpenssl();
  const envoy = await resolveEnvoyBinary();
  if (envoy.kind !== 'binary')
    throw new Error('this test needs the Envoy binary: run `npm run setup` (or set ENVOY_BIN)');
  dir = await mkdtemp(join(tmpdir(), 'sekisho-mesh-'));
  pki = createMeshPki(join(dir, 'pki'));
  const [xds, admin, listener, extAuthzGrpc, extAuthzAdmin, customerApp, appointmentApp] = await Promise.all(
    Array.from({ length: 7 }, () => freePort()),
  );
  ports.customerIn = await freePort();
  ports.customerOut = await freePort();
  ports.appointmentIn = await freePort();
  ports.appointmentOut = await freePort();
  keyServer = await createFirebaseKeyServer({});

  apps.push(
    await startDemoUpstream({
      name: 'customer',
      port: customerApp as number,
      calls: { prefix: '/calls/', url: `http://127.0.0.1:${ports.customerOut}`, host: 'appointment.salon' },
    }),
    await startDemoUpstream({ name: 'appointment', port: appointmentApp as number }),
  );
  const definitionFile = join(dir, 'gateway.yaml');
  await writeDefinitionFile(definitionFile, {
    listeners: { http: { address: '127.0.0.1', port: listener } },
    identity: {
      firebase: { projectId: 'demo-salon' },
      groupClaim: 'tier',
      groups: { basic_customer: ['read:own_profile'], staff: ['read:own_profile', 'manage:appointments'] },
    },
    policyServices: {
      extAuthz: { address: `127.0.0.1:${extAuthzGrpc}`, healthCheck: false },
      rateLimit: { address: `127.0.0.1:${await freePort()}`, healthCheck: false },
    },
    services: {
      customer: { endpoints: [`127.0.0.1:${customerApp}`] },
      appointment: { endpoints: [`127.0.0.1:${appointmentApp}`] },
    },
    routes: [
      { match: 'GET /api/v1/customer/*', to: 'customer', rewrite: '/', require: ['read:own_profile'] },
      { match: 'GET /api/v1/appointments/*', to: 'appointment', rewrite: '/', require: ['read:own_profile'] },
    ],
    mesh: {
      trustDomain,
      ingress: { namespace: 'sekisho-system', serviceAccount: 'ingress' },
      services: {
        customer: {
          namespace: 'salon',
          appPort: customerApp,
          inboundPort: ports.customerIn,
          outboundPort: ports.customerOut,
          address: `127.0.0.1:${ports.customerIn}`,
          allow: [{ from: ['ingress'] }],
        },
        appointment: {
          namespace: 'salon',
          appPort: appointmentApp,
          inboundPort: ports.appointmentIn,
          outboundPort: ports.appointmentOut,
          address: `127.0.0.1:${ports.appointmentIn}`,
          // Only customer, only reads: not the ingress, not a POST.
          allow: [{ from: ['customer'], methods: ['GET'], paths: ['/appointments/*'] }],
          // Checked by ext-authz in appointment's sidecar, on the end user customer forwards.
          routes: [
            { match: 'GET /appointments/mine/*', require: ['read:own_profile'] },
            { match: 'GET /appointments/all/*', require: ['manage:appointments'] },
            { match: 'GET /appointments/limited/*', limits: [{ per: 'user', limit: 2, window: '1m' }] },
          ],
        },
      },
    },
  });

  // The product's mesh CA (what CONTROL_PLANE_MESH_CA_* configures), with a lifetime below the
  // configuration's 5-minute floor so that rotations happen while the tests run.
  meshCa = new MeshCa({
    source: { kind: 'files', certFile: pki.caFile, keyFile: pki.caKeyFile, bundleFile: pki.caFile },
    trustDomain,
    logger: createLogger('control-plane', { level: 'warn' }),
    registry: new Registry(),
    ttlMs: certificateTtlMs,
    renewAt: 0.5,
    backdateMs: 1_000,
    pollIntervalMs: 0,
  });
  controlPlane = await startControlPlane(
    configSchema.parse({
      CONTROL_PLANE_DEFINITION: definitionFile,
      CONTROL_PLANE_XDS_PORT: String(xds),
      CONTROL_PLANE_ADMIN_PORT: String(admin),
    }),
    {
      logger: createLogger('control-plane', { level: 'warn' }),
      registry: new Registry(),
      secrets: meshCa,
    },
  );
  // ext-authz as its image runs it: the bundle `npm run build` writes, under plain node with
  // production's flags (built into this run's own directory, so no other test's build races it).
  const built = await buildServices(join(dir, 'dist'));
  const extAuthz = spawnProcess({
    name: 'ext-authz',
    command: process.execPath,
    args: [...productionNodeFlags, distEntry('ext-authz', built.outDir)],
    env: {
      ...productionNodeEnv,
      ...process.env,
      EXT_AUTHZ_GRPC_PORT: String(extAuthzGrpc),
      EXT_AUTHZ_ADMIN_PORT: String(extAuthzAdmin),
      EXT_AUTHZ_XDS_ADDRESS: `127.0.0.1:${xds}`,
      EXT_AUTHZ_FIREBASE_CERTS_URL: keyServer.url,
      EXT_AUTHZ_KEYS_ALLOW_HTTP: 'true',
      LOG_LEVEL: 'warn',
    },
  });
  processes.push(extAuthz);
  await extAuthz.waitForHttp(`http://127.0.0.1:${extAuthzAdmin}/readyz`, 60_000);

  const controlPlaneAddress = { host: '127.0.0.1', port: xds as number };
  const ingress = await startEnvoy({
    nodeId: 'ingress-1',
    cluster: 'sekisho-ingress',
    controlPlane: controlPlaneAddress,
    logLevel: 'warning',
  });
  envoys.push(ingress);
  for (const service of ['customer', 'appointment']) {
    envoys.push(
      await startEnvoy({
        nodeId: `${service}-1.salon`,
        cluster: `sidecar:${service}`,
        controlPlane: controlPlaneAddress,
        logLevel: 'warning',
      }),
    );
  }
  const [, customerSidecar, appointmentSidecar] = envoys;
  await customerSidecar?.waitForListener('sidecar_outbound', 60_000);
  await customerSidecar?.waitForListener('sidecar_inbound', 60_000);
  await appointmentSidecar?.waitForListener('sidecar_inbound', 60_000);
  await ingress.waitForListener('ingress_http', 60_000);
  gateway = `http://127.0.0.1:${listener}`;
}, 240_000);

afterAll(async () => {
  for (const envoy of envoys) await envoy.stop();
  for (const p of processes) await p.stop();
  await controlPlane?.close();
  meshCa?.close();
  for (const app of apps) await app.close(0);
  await keyServer?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function token(uid: string): Promise<string> {
  if (!keyServer) throw new Error('no key server');
  return mintIdToken(keyServer.signingKey, { projectId: 'demo-salon', uid, claims: { tier: 'basic_customer' } });
}

describe('the mesh: sidecars, mutual TLS and service-to-service policy', () => {
  it('ingress → customer sidecar → customer → outbound → appointment sidecar → appointment, with the end user', async () => {
    const response = await fetch(`${gateway}/api/v1/customer/calls/appointments/7`, {
      headers: {
        authorization: `Bearer ${await token('user-42')}`,
        // Forged from outside: the ingress removes it before anything sees it.
        [identityHeaders.group]: 'admin',
        [identityHeaders.permissions]: 'write:everything',
      },
    });
    expect(response.status).toBe(200);
    const answer = (await response.json()) as CallResponse;
    expect(answer.service).toBe('customer');
    expect(answer.called.status).toBe(200);
    const appointment = answer.called.body as EchoResponse;
    expect(appointment.service).toBe('appointment');
    expect(appointment.path).toBe('/appointments/7');
    // The end user's identity, as ext-authz set it at the ingress, travelled through the mesh.
    expect(appointment.headers[identityHeaders.userId]).toBe('user-42');
    expect(appointment.headers[identityHeaders.group]).toBe('basic_customer');
    expect(appointment.headers[identityHeaders.permissions]).toBe('read:own_profile');
  });

  it('serves each Envoy its own view', () => {
    const list = (controlPlane?.status().nodes ?? []) as Array<{ nodeId?: string; view?: string }>;
    expect(Object.fromEntries(list.map((node) => [node.nodeId, node.view]))).toMatchObject({
      'ingress-1': 'ingress',
      'customer-1.salon': 'sidecar:customer',
      'appointment-1.salon': 'sidecar:appointment',
    });
  });

  it('never lets identity headers a client sends from outside reach an app', async () => {
    const response = await fetch(`${gateway}/api/v1/customer/whoami`, {
      headers: {
        authorization: `Bearer ${await token('user-7')}`,
        [identityHeaders.userId]: 'someone-else',
        [identityHeaders.email]: 'forged@example.com',
      },
    });
    expect(response.status).toBe(200);
    const echo = (await response.json()) as EchoResponse;
    expect(echo.service).toBe('customer');
    expect(echo.headers[identityHeaders.userId]).toBe('user-7');
    expect(echo.headers[identityHeaders.email]).toBeUndefined();
  });

  it('refuses a caller the policy does not allow with 403: the ingress, another workload, a POST', async () => {
    // The ingress may call customer, not appointment: its own route to appointment is refused there.
    const viaIngress = await fetch(`${gateway}/api/v1/appointments/appointments/7`, {
      headers: { authorization: `Bearer ${await token('user-42')}` },
    });
    expect(viaIngress.status).toBe(403);

    const intruder = pki.issue('intruder', spiffeIdOf(trustDomain, 'salon', 'intruder'));
    const asIntruder = await meshRequest(ports.appointmentIn, '/appointments/7', { client: intruder });
    expect(asIntruder.status).toBe(403);
    expect(asIntruder.body).toBe('RBAC: access denied');
    // The server is appointment's sidecar, by its workload identity.
    expect(asIntruder.peer).toContain(appointmentId);

    const customer = pki.issue('customer-direct', customerId);
    const read = await meshRequest(ports.appointmentIn, '/appointments/7', { client: customer });
    expect(read.status).toBe(200);
    expect((JSON.parse(read.body) as EchoResponse).service).toBe('appointment');
    const write = await meshRequest(ports.appointmentIn, '/appointments/7', { client: customer, method: 'POST' });
    expect(write.status).toBe(403);
    const otherPath = await meshRequest(ports.appointmentIn, '/admin', { client: customer });
    expect(otherPath.status).toBe(403);
  });

  it('refuses in the handshake: plaintext, no client certificate, a certificate of another CA', async () => {
    await expect(fetch(`http://127.0.0.1:${ports.appointmentIn}/appointments/7`)).rejects.toThrow();
    await expect(meshRequest(ports.appointmentIn, '/appointments/7', {})).rejects.toThrow();
    const otherCa = createMeshPki(join(dir, 'other-pki'), 'other-ca');
    const foreign = otherCa.issue('foreign-customer', customerId);
    await expect(meshRequest(ports.appointmentIn, '/appointments/7', { client: foreign })).rejects.toThrow();
  });

  it("routes customer's outbound calls by every name of an allowed callee, and answers 404 for anything else", async () => {
    for (const host of ['appointment', 'appointment.salon:80', 'appointment.salon.svc.cluster.local:15001']) {
      const answer = await plainRequest(ports.customerOut, '/appointments/3', host);
      expect(answer.status, host).toBe(200);
      expect((JSON.parse(answer.body) as EchoResponse).service).toBe('appointment');
    }
    // No passthrough: a name that is no callee of customer's (customer itself, the outside).
    for (const host of ['example.com', 'customer.salon', `127.0.0.1:${ports.appointmentIn}`]) {
      expect((await plainRequest(ports.customerOut, '/appointments/3', host)).status, host).toBe(404);
    }
  });
  it('rotates every workload certificate during continuous calls without failing one', async () => {
    const customer = pki.issue('customer-rotation', customerId);
    const serialOf = async () =>
      (await meshRequest(ports.appointmentIn, '/appointments/1', { client: customer })).serial;
    const before = await serialOf();
    const authorization = `Bearer ${await token('user-42')}`;
    // Kept-alive connections through the whole chain (ingress → customer → appointment) for
    // two and a half lifetimes: each certificate is replaced at least twice meanwhile.
    const until = Date.now() + certificateTtlMs * 2.5;
    const failures: string[] = [];
    let calls = 0;
    const caller = async () => {
      while (Date.now() < until) {
        calls += 1;
        try {
          const response = await fetch(`${gateway}/api/v1/customer/calls/appointments/7`, {
            headers: { authorization },
          });
          const answer = (await response.json()) as CallResponse;
          if (response.status !== 200 || answer.called.status !== 200)
            failures.push(`${response.status}/${answer.called.status}`);
        } catch (error) {
          failures.push(String(error));
        }
      }
    };
    await Promise.all([caller(), caller(), caller(), caller()]);
    expect(failures).toEqual([]);
    expect(calls).toBeGreaterThan(20);
    // New connections see appointment's sidecar with a certificate issued since.
    const after = await serialOf();
    expect(after).not.toBe('');
    expect(after).not.toBe(before);
  }, 60_000);

  it("lets the end user through appointment's sidecar ext_authz on a route whose permission the user has", async () => {
    const response = await fetch(`${gateway}/api/v1/customer/calls/appointments/mine/7`, {
      headers: { authorization: `Bearer ${await token('user-42')}` },
    });
    expect(response.status).toBe(200);
    const answer = (await response.json()) as CallResponse;
    expect(answer.called.status).toBe(200);
    const appointment = answer.called.body as EchoResponse;
    expect(appointment.path).toBe('/appointments/mine/7');
    // Set again by the sidecar's check: the permissions from the policy's group.
    expect(appointment.headers[identityHeaders.userId]).toBe('user-42');
    expect(appointment.headers[identityHeaders.permissions]).toBe('read:own_profile');
  });

  it("refuses in appointment's sidecar, with the JSON error, a route whose permission the end user lacks", async () => {
    const response = await fetch(`${gateway}/api/v1/customer/calls/appointments/all/7`, {
      headers: { authorization: `Bearer ${await token('user-42')}` },
    });
    // customer answered; what it got from appointment's sidecar is the refusal.
    expect(response.status).toBe(200);
    const answer = (await response.json()) as CallResponse;
    expect(answer.called.status).toBe(403);
    expect(answer.called.body).toMatchObject({
      error: { code: 'INSUFFICIENT_PERMISSIONS', required_permissions: ['manage:appointments'] },
    });
  });

  it('refuses a workload that forwards no end user on a route that requires a permission (401), and a forged group', async () => {
    const customer = pki.issue('customer-no-user', customerId);
    const noUser = await meshRequest(ports.appointmentIn, '/appointments/mine/7', { client: customer });
    expect(noUser.status).toBe(401);
    expect(JSON.parse(noUser.body)).toMatchObject({ error: { code: 'MISSING_TOKEN' } });
    // A forwarded permission list is not believed: the group's permissions decide.
    const forged = await meshRequest(ports.appointmentIn, '/appointments/all/7', {
      client: customer,
      headers: {
        [identityHeaders.userId]: 'user-42',
        [identityHeaders.group]: 'basic_customer',
        [identityHeaders.permissions]: 'manage:appointments',
      },
    });
    expect(forged.status).toBe(403);
    // Paths none of appointment's routes name are decided by RBAC alone, as before.
    expect((await meshRequest(ports.appointmentIn, '/appointments/7', { client: customer })).status).toBe(200);
  });
});

describe("the mesh: a per-user limit in a service's sidecar", () => {
  let redis: RedisHandle | undefined;
  let rateLimitService: ManagedProcess | undefined;

  // The rate-limit service the definition names (policyServices.rateLimit), fed its policy by
  // the same control plane, counting in a real Redis.
  beforeAll(async () => {
    redis = await startRedis();
    const definition = parse(await readFile(join(dir, 'gateway.yaml'), 'utf8'));
    const grpcPort = Number(String(definition.policyServices.rateLimit.address).split(':')[1]);
    const adminPort = await freePort();
    rateLimitService = spawnProcess({
      name: 'ratelimit-service',
      // From the bundle the set-up built for ext-authz (every service is in it), as its image runs it.
      command: process.execPath,
      args: [...productionNodeFlags, distEntry('ratelimit-service', join(dir, 'dist'))],
      env: {
        ...productionNodeEnv,
        ...process.env,
        RATELIMIT_GRPC_PORT: String(grpcPort),
        RATELIMIT_ADMIN_PORT: String(adminPort),
        RATELIMIT_XDS_ADDRESS: `127.0.0.1:${controlPlane?.xdsPort}`,
        RATELIMIT_REDIS_URL: redis.url,
        LOG_LEVEL: 'warn',
      },
    });
    await rateLimitService.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 60_000);
  }, 120_000);

  afterAll(async () => {
    await rateLimitService?.stop();
    await redis?.stop();
  });

  it("answers 429 from appointment's sidecar once the end user is over the route's limit, counting each user apart", async () => {
    const call = async (uid: string) => {
      const response = await fetch(`${gateway}/api/v1/customer/calls/appointments/limited/1`, {
        headers: { authorization: `Bearer ${await token(uid)}` },
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as CallResponse).called;
    };
    expect((await call('user-limited')).status).toBe(200);
    expect((await call('user-limited')).status).toBe(200);
    const over = await call('user-limited');
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({ error: { code: 'RATE_LIMIT_EXCEEDED' } });
    // Another end user through the same workload has a count of its own.
    expect((await call('user-other')).status).toBe(200);
  });
});
