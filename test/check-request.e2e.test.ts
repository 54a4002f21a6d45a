import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type EnvoyHandle, startEnvoy } from '@sekisho/devstack/envoy';
import { freePort } from '@sekisho/devstack/processes';
import { decodeCheckRequestView, viewOfCheckRequest } from '@sekisho/ext-authz/check-request';
import { encodeCheckResponse } from '@sekisho/ext-authz/check-response';
import {
  AuthorizationService,
  CheckRequest,
  type CheckResponse,
} from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import { type GrpcServer, startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';

// ext-authz's hand-written CheckRequest decoder on what a real Envoy 1.40 sends: Envoy's
// ext_authz filter calls a gRPC server that keeps every request's bytes and answers OK, on a
// listener with encode_raw_headers (header_map, as the control plane configures it) and one
// without (the headers map); the route carries context_extensions as the control plane's do.
// Each captured request is then decoded by the hand-written decoder and by the generated one
// (with the conversion Check made of it before): the views must be the same.

const routeExtensions = {
  [authzContextKeys.routeId]: 'profile',
  [authzContextKeys.permissions]: 'read:own_profile',
  [authzContextKeys.maxRequestHeaders]: '100',
  [authzContextKeys.maxRequestHeaderBytes]: '61440',
};

function bootstrap(authzPort: number, rawPort: number, mapPort: number): string {
  const listener = (name: string, port: number, raw: boolean) => `
    - name: ${name}
      address: { socket_address: { address: 127.0.0.1, port_value: ${port} } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ${name}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          direct_response: { status: 200, body: { inline_string: "ok" } }
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              check_settings:
                                context_extensions: ${JSON.stringify(routeExtensions)}
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      encode_raw_headers: ${raw}
                      include_peer_certificate: true
                      grpc_service: { envoy_grpc: { cluster_name: authz }, timeout: 2s }
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`;
  // ${ADMIN_ADDRESS} and ${ADMIN_PORT} are filled in by devstack.
  return `
admin:
  address: { socket_address: { address: "\${ADMIN_ADDRESS}", port_value: \${ADMIN_PORT} } }
static_resources:
  listeners:${listener('raw_headers', rawPort, true)}${listener('header_map', mapPort, false)}
  clusters:
    - name: authz
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: authz
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${authzPort} } } }
`;
}

/** One HTTP/1.1 request written as is (connection: close: Envoy closes after answering), the response text. */
function rawRequest(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(`${head}connection: close\r\n\r\n`));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

describe("ext-authz's CheckRequest decoder on a real Envoy's requests", () => {
  const captured: Buffer[] = [];
  let server: GrpcServer;
  let envoy: EnvoyHandle;
  let dir: string;
  let ports: { raw: number; map: number };

  beforeAll(async () => {
    // The bytes Envoy sent, kept before anything decodes them; every call is answered OK.
    const capturing = {
      ...AuthorizationService,
      check: {
        ...AuthorizationService.check,
        requestDeserialize: (bytes: Buffer) => {
          captured.push(Buffer.from(bytes));
          return bytes;
        },
      },
    };
    const ok: CheckResponse = { status: { code: 0, message: '', details: [] } };
    server = await startGrpcServer({
      port: 0,
      transport: 'http2',
      register: (registrar) =>
        registrar.addService(
          capturing,
          { check: (_call: unknown, callback: (e: null, r: CheckResponse) => void) => callback(null, ok) },
          { check: encodeCheckResponse },
        ),
    });
    ports = { raw: await freePort(), map: await freePort() };
    dir = await mkdtemp(join(tmpdir(), 'sekisho-check-request-'));
    const template = join(dir, 'bootstrap.yaml');
    await writeFile(template, bootstrap(server.port, ports.raw, ports.map));
    envoy = await startEnvoy({
      nodeId: 'check-request-test',
      cluster: 'check-request-test',
      controlPlane: { host: '127.0.0.1', port: 1 },
      template,
      concurrency: 1,
    });
    await envoy.waitForListener('raw_headers', 30_000);
    await envoy.waitForListener('header_map', 30_000);
  }, 60_000);

  afterAll(async () => {
    await envoy?.stop();
    await server?.close(0);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('decodes every request Envoy sent exactly as the generated decoder does', async () => {
    onTestFailed(() => console.log(envoy.logs()));
    const token = `eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.${'e'.repeat(700)}.${'s'.repeat(342)}`;
    const requests: Array<{ path: string; init: RequestInit }> = [
      { path: '/api/v1/customer/profile', init: { headers: { authorization: `Bearer ${token}` } } },
      {
        path: '/api/v1/customers/c-42/appointments?from=2030-01-01&x=%E6%97%A5',
        init: {
          method: 'POST',
          body: '{"a":1}',
          headers: {
            authorization: `bearer ${token}`,
            'accept-language': 'ja,en;q=0.8',
            'user-agent': 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)',
            'x-forwarded-for': '198.51.100.7, 10.0.0.1',
            'x-sekisho-user-id': 'forged',
            'x-sekisho-anything': 'forged too',
            'x-device-id': 'device-1',
            cookie: 'a=1; b=2',
            'content-type': 'application/json',
          },
        },
      },
      { path: '/health', init: { method: 'HEAD' } },
      { path: '/unicode', init: { headers: { 'x-note': 'caf\u00e9' } } },
    ];
    for (const port of [ports.raw, ports.map]) {
      for (const { path, init } of requests) {
        const response = await fetch(`http://127.0.0.1:${port}${path}`, init);
        expect(response.status).toBe(200);
        await response.arrayBuffer();
      }
      // A header sent twice (two lines: fetch would join them itself): one header_map entry
      // each, one comma-joined headers value.
      expect(await rawRequest(port, 'GET /twice HTTP/1.1\r\nhost: x\r\nx-twice: one\r\nx-twice: two\r\n')).toMatch(
        /^HTTP\/1\.1 200/,
      );
    }
    expect(captured).toHaveLength(2 * (requests.length + 1));

    const views = captured.map((bytes) => {
      const view = decodeCheckRequestView(bytes);
      const expected = viewOfCheckRequest(CheckRequest.decode(bytes));
      expect(view).toEqual(expected);
      expect(Object.keys(view.headers)).toEqual(Object.keys(expected.headers));
      expect(Object.getPrototypeOf(view.headers)).toBe(null);
      return view;
    });
    // What Envoy sent is what the decoder read: the route's extensions, the peer, the headers.
    for (const view of views) {
      expect(view.contextExtensions).toEqual(routeExtensions);
      expect(view.sourceAddress).toBe('127.0.0.1');
      expect(view.id).not.toBe('');
    }
    const [rawFirst, rawSecond] = views;
    expect(rawFirst?.headerSize?.count).toBeGreaterThan(3);
    expect(rawFirst?.headers.authorization).toBe(`Bearer ${token}`);
    expect(rawSecond).toMatchObject({
      method: 'POST',
      path: '/api/v1/customers/c-42/appointments?from=2030-01-01&x=%E6%97%A5',
    });
    expect(rawSecond?.headers['x-sekisho-anything']).toBe('forged too');
    const mapFirst = views[requests.length + 1];
    expect(mapFirst?.headerSize).toBeUndefined();
    expect(mapFirst?.headers.authorization).toBe(`Bearer ${token}`);
    expect(views[requests.length]?.headers['x-twice']).toBe('one,two');
    expect(views[2 * requests.length + 1]?.headers['x-twice']).toBe('one,two');
  });
});
