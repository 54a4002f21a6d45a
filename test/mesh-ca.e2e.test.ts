// The mesh CA against a real Envoy: a listener (built here, as the sidecar views will build
// theirs) terminates mutual TLS with the two SDS secrets the MeshCa supplies, served through
// the control plane's own SnapshotCache and ADS server. A peer with a certificate of the same CA
// and the expected SPIFFE id gets through; no certificate, another CA's, or another identity's
// is refused in the handshake. Then, with a 4 s TTL renewed at half-life, requests keep flowing
// on a kept-alive connection and on new connections across rotations: none fails, the kept-alive
// connection is never dropped, and new connections see each new server certificate.

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type ClientHttp2Session, connect as http2Connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { MeshCa } from '@sekisho/control-plane/mesh/ca';
import { meshSecretNames, spiffeIdOf } from '@sekisho/control-plane/mesh/contract';
import { createTestCa } from '@sekisho/control-plane/mesh/test-ca';
import type { Resource } from '@sekisho/control-plane/xds/resources';
import {
  type AdsWithEnvoy,
  captureLogger,
  edsCluster,
  loadAssignment,
  resourcesOf,
  routeTo,
  serveToRealEnvoy,
} from '@sekisho/control-plane/xds/test-helpers';
import { typeUrls } from '@sekisho/control-plane/xds/type-urls';
import { freePort } from '@sekisho/devstack/processes';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import { HttpConnectionManager } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { SubjectAltNameMatcher_SanType } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/common';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { DownstreamTlsContext } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ads = { ads: {}, resourceApiVersion: ApiVersion.V3 };
const any = (typeUrl: string, value: Uint8Array) => ({ typeUrl, value: Buffer.from(value) });

const serverId = spiffeIdOf('cluster.local', 'salon', 'appointment');
const clientId = spiffeIdOf('cluster.local', 'salon', 'customer');

/** An inbound mTLS listener: the workload certificate and the trust bundle over SDS, and only `allowedPeer` let in. */
function mtlsListener(port: number, allowedPeer: string): Resource {
  const hcm = HttpConnectionManager.fromPartial({
    statPrefix: 'inbound',
    rds: { configSource: ads, routeConfigName: 'inbound_routes' },
    httpFilters: [
      {
        name: 'envoy.filters.http.router',
        typedConfig: any(
          'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
          Router.encode(Router.fromPartial({})).finish(),
        ),
      },
    ],
  });
  const tls = DownstreamTlsContext.fromPartial({
    requireClientCertificate: true,
    commonTlsContext: {
      tlsCertificateSdsSecretConfigs: [{ name: meshSecretNames.certificate, sdsConfig: ads }],
      combinedValidationContext: {
        defaultValidationContext: {
          matchTypedSubjectAltNames: [{ sanType: SubjectAltNameMatcher_SanType.URI, matcher: { exact: allowedPeer } }],
        },
        validationContextSdsSecretConfig: { name: meshSecretNames.trustBundle, sdsConfig: ads },
      },
      alpnProtocols: ['h2', 'http/1.1'],
    },
  });
  const listener = Listener.fromPartial({
    name: 'inbound',
    address: { socketAddress: { address: '127.0.0.1', portValue: port } },
    filterChains: [
      {
        transportSocket: {
          name: 'envoy.transport_sockets.tls',
          typedConfig: any(
            'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
            DownstreamTlsContext.encode(tls).finish(),
          ),
        },
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typedConfig: any(
              'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              HttpConnectionManager.encode(hcm).finish(),
            ),
          },
        ],
      },
    ],
  });
  return { name: 'inbound', resource: any(typeUrls.listener, Listener.encode(listener).finish()) };
}

/** The PEM chain and key of a workload's certificate Secret, as a TLS client presents them. */
function clientCredentials(secrets: Resource[]): { cert: string; key: string } {
  const secret = Secret.decode(
    secrets.find((s) => s.name === meshSecretNames.certificate)?.resource.value ?? new Uint8Array(),
  );
  return {
    cert: secret.tlsCertificate?.certificateChain?.inlineString ?? '',
    key: secret.tlsCertificate?.privateKey?.inlineString ?? '',
  };
}

describe('mesh CA certificates served over SDS to a real Envoy', () => {
  let dir: string;
  let mesh: MeshCa;
  let otherMesh: MeshCa;
  let served: AdsWithEnvoy | undefined;
  let upstream: Server;
  let port: number;
  let bundle: string;
  const serverSerials: string[] = [];

  /** One GET on a new connection: status, and the serial of the server certificate. */
  const get = (opts: { cert?: string; key?: string }) =>
    new Promise<{ status: number; serial: string }>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          path: '/',
          ca: bundle,
          // The server is known by its SPIFFE id, not a host name.
          checkServerIdentity: (_host, cert) =>
            cert.subjectaltname === `URI:${serverId}` ? undefined : new Error(`server is ${cert.subjectaltname}`),
          agent: false,
          cert: opts.cert,
          key: opts.key,
        },
        (res) => {
          const socket = res.socket as TLSSocket;
          const serial = socket.getPeerCertificate().serialNumber;
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, serial }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.setTimeout(5_000, () => req.destroy(new Error('timed out')));
      req.end();
    });

  const serve = () => {
    served?.cache.setSnapshot(
      resourcesOf(
        edsCluster('upstream'),
        loadAssignment('upstream', [{ host: '127.0.0.1', port: (upstream.address() as { port: number }).port }]),
        mtlsListener(port, clientId),
        routeTo('inbound_routes', 'upstream'),
        ...mesh.secretsFor(serverId),
      ),
    );
    serverSerials.push(mesh.current(serverId)?.serialNumber ?? '');
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mesh-ca-e2e-'));
    const ca = createTestCa(join(dir, 'mesh'));
    const other = createTestCa(join(dir, 'other'), { name: 'other' });
    // 4 s certificates renewed at half-life: two rotations in a few seconds.
    mesh = new MeshCa({
      source: { kind: 'directory', dir: ca.secretDir },
      trustDomain: 'cluster.local',
      logger: captureLogger('info').logger,
      registry: new Registry(),
      ttlMs: 4_000,
      renewAt: 0.5,
      pollIntervalMs: 0,
    });
    otherMesh = new MeshCa({
      source: { kind: 'directory', dir: other.secretDir },
      trustDomain: 'cluster.local',
      logger: captureLogger('info').logger,
      registry: new Registry(),
      pollIntervalMs: 0,
    });
    bundle = Secret.decode(mesh.secretsFor(serverId)[1]?.resource.value ?? new Uint8Array()).validationContext
      ?.trustedCa?.inlineString as string;
    upstream = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    port = await freePort();
    served = await serveToRealEnvoy('mesh-ca-test', resourcesOf());
    serve();
    // What main.ts does on a rotation: serve the views again (watcher.refresh), which ask for the secrets anew.
    mesh.onRotation(serve);
  }, 60_000);

  afterAll(async () => {
    mesh?.close();
    otherMesh?.close();
    await served?.close();
    await new Promise((resolve) => upstream?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  const withEnvoyLogs = async (run: () => Promise<void>) => {
    try {
      await run();
    } catch (error) {
      throw new Error(
        `${error instanceof Error ? error.stack : String(error)}\n--- envoy ---\n${served?.envoy.logs() ?? ''}`,
      );
    }
  };

  it(
    'lets in a peer with the expected identity from the mesh CA and refuses every other',
    () =>
      withEnvoyLogs(async () => {
        // The listener warms until both secrets arrived; then the right peer gets through.
        const deadline = Date.now() + 20_000;
        for (;;) {
          const ok = await get(clientCredentials(mesh.secretsFor(clientId))).catch(() => undefined);
          if (ok?.status === 200) break;
          if (Date.now() > deadline) throw new Error('the mTLS listener never answered the mesh peer');
          await new Promise((r) => setTimeout(r, 100));
        }
        await expect(get({})).rejects.toThrow();
        await expect(get(clientCredentials(otherMesh.secretsFor(clientId)))).rejects.toThrow();
        await expect(
          get(clientCredentials(mesh.secretsFor(spiffeIdOf('cluster.local', 'salon', 'intruder')))),
        ).rejects.toThrow();
      }),
    60_000,
  );

  it(
    'drops no request across two rotations, on a kept-alive connection and on new ones',
    () =>
      withEnvoyLogs(async () => {
        // One HTTP/2 connection for the whole test: if a rotation dropped it, its streams would fail and it would close.
        const keptAlive: ClientHttp2Session = http2Connect(`https://127.0.0.1:${port}`, {
          ca: bundle,
          ...clientCredentials(mesh.secretsFor(clientId)),
          checkServerIdentity: (_host, cert) =>
            cert.subjectaltname === `URI:${serverId}` ? undefined : new Error(`server is ${cert.subjectaltname}`),
        });
        let keptAliveClosed = false;
        keptAlive.on('close', () => {
          keptAliveClosed = true;
        });
        keptAlive.on('error', () => undefined);
        const onKeptAlive = () =>
          new Promise<number>((resolve, reject) => {
            const stream = keptAlive.request({ ':path': '/' });
            let status = 0;
            stream.on('response', (headers) => {
              status = Number(headers[':status']);
            });
            stream.resume();
            stream.on('end', () => resolve(status));
            stream.on('error', reject);
            stream.setTimeout(5_000, () => stream.close());
          });
        const failures: string[] = [];
        let keptAliveRequests = 0;
        const newConnectionSerials = new Set<string>();
        const deadline = Date.now() + 60_000;
        try {
          // Until the server certificate was rotated twice and new connections saw it.
          while (newConnectionSerials.size < 3) {
            if (Date.now() > deadline) throw new Error(`not two rotations seen: ${[...newConnectionSerials]}`);
            const [kept, fresh] = await Promise.allSettled([
              onKeptAlive(),
              // A new connection with the client's current certificate (it rotates too).
              get(clientCredentials(mesh.secretsFor(clientId))),
            ]);
            if (kept.status === 'fulfilled' && kept.value === 200) keptAliveRequests++;
            else failures.push(`kept-alive: ${kept.status === 'fulfilled' ? kept.value : String(kept.reason)}`);
            if (fresh.status === 'fulfilled' && fresh.value.status === 200)
              newConnectionSerials.add(fresh.value.serial);
            else
              failures.push(
                `new connection: ${fresh.status === 'fulfilled' ? fresh.value.status : String(fresh.reason)}`,
              );
            await new Promise((r) => setTimeout(r, 50));
          }
        } finally {
          expect(keptAliveClosed).toBe(false);
          keptAlive.close();
        }
        expect(failures).toEqual([]);
        expect(keptAliveRequests).toBeGreaterThan(0);
        // Every serial a new connection saw is one the mesh CA issued for the server.
        for (const serial of newConnectionSerials) expect(serverSerials).toContain(serial);
      }),
    90_000,
  );
});
