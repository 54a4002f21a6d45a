import { X509Certificate } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { operationalProblems, podSecurityRestrictedProblems } from '@sekisho/devstack/kube-policy';
import { describeProblems, validateObject } from '@sekisho/devstack/kube-schema';
import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueServerCertificate,
} from '@sekisho/devstack/tls-certs';
import { createLogger } from '@sekisho/service-kit/logger';
import jsonpatch, { type Operation } from 'fast-json-patch';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema, type InjectorConfig } from './config';
import { createInjectorMetrics } from './metrics';
import { startWebhookServer, type WebhookServer, webhookPath } from './server';

// The webhook as the API server sees it: real AdmissionReview JSON over HTTPS (trusting the
// test CA, as the API server trusts the caBundle), each patch applied with a JSONPatch library
// and the result validated as a Pod against the Kubernetes schema and Pod Security "restricted".

type Json = Record<string, unknown>;

let dir: string;
let ca: CertificateAuthority;
/** The control channel CA (INJECTOR_XDS_CA_FILE): csi mode puts it inline in every bootstrap. */
let xdsCa: CertificateAuthority;
const servers: WebhookServer[] = [];

async function writePair(name: string) {
  const pair = await issueServerCertificate(ca, {
    commonName: 'injector',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  // Written then renamed, as the kubelet swaps a volume: the watcher never sees half a file.
  await writeFile(join(dir, `${name}.tmp.crt`), pair.certificatePem);
  await writeFile(join(dir, `${name}.tmp.key`), pair.privateKeyPem);
  await rename(join(dir, `${name}.tmp.key`), join(dir, `${name}.key`));
  await rename(join(dir, `${name}.tmp.crt`), join(dir, `${name}.crt`));
  return pair;
}

function config(env: Record<string, string> = {}): InjectorConfig {
  return configSchema.parse({
    INJECTOR_PORT: '0',
    INJECTOR_TLS_CERT_FILE: join(dir, 'tls.crt'),
    INJECTOR_TLS_KEY_FILE: join(dir, 'tls.key'),
    INJECTOR_TLS_POLL_INTERVAL: '100ms',
    INJECTOR_IPTABLES_IMAGE: 'registry.example/sekisho/iptables:1',
    INJECTOR_XDS_CA_FILE: join(dir, 'xds-ca.crt'),
    ...env,
  });
}

async function start(env: Record<string, string> = {}) {
  const server = await startWebhookServer(config(env), {
    logger: createLogger('test', { level: 'silent' }),
    metrics: createInjectorMetrics(new Registry()),
  });
  servers.push(server);
  return server;
}

function post(
  port: number,
  body: string,
  opts: { method?: string; path?: string; contentType?: string } = {},
): Promise<{ status: number; json: Json }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: opts.method ?? 'POST',
        path: opts.path ?? webhookPath,
        ca: ca.certificatePem,
        headers: { 'content-type': opts.contentType ?? 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.method === 'GET' ? undefined : body);
  });
}

function pod(overrides: { metadata?: Json; spec?: Json } = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'customer-7d9f-',
      labels: { 'app.kubernetes.io/name': 'customer' },
      ...overrides.metadata,
    },
    spec: {
      serviceAccountName: 'customer',
      containers: [
        {
          name: 'app',
          image: 'registry.example/customer:1',
          ports: [{ containerPort: 3001 }],
          // A workload that already passes Pod Security "restricted": the sidecar must keep it so.
          securityContext: {
            runAsNonRoot: true,
            allowPrivilegeEscalation: false,
            capabilities: { drop: ['ALL'] },
            seccompProfile: { type: 'RuntimeDefault' },
          },
        },
      ],
      ...overrides.spec,
    },
  };
}

function review(object: unknown, request: Json = {}): Json {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      namespace: 'shop',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...request,
    },
  };
}

/** Sends the review, checks the envelope, applies the patch; returns the response and the patched pod. */
async function admit(port: number, body: Json) {
  const { status, json } = await post(port, JSON.stringify(body));
  expect(status).toBe(200);
  expect(json.apiVersion).toBe('admission.k8s.io/v1');
  expect(json.kind).toBe('AdmissionReview');
  const response = json.response as Json;
  expect(response.uid).toBe((body.request as Json).uid);
  const original = (body.request as Json).object as Json;
  let patched = original;
  let operations: Operation[] = [];
  if (response.patch !== undefined) {
    expect(response.patchType).toBe('JSONPatch');
    operations = JSON.parse(Buffer.from(String(response.patch), 'base64').toString());
    expect(jsonpatch.validate(operations, original)).toBeUndefined();
    patched = jsonpatch.applyPatch(structuredClone(original), operations, true, false).newDocument;
  }
  return { response, operations, patched };
}

function expectValidPod(patched: Json) {
  const problems = validateObject({
    ...patched,
    metadata: { name: 'customer-7d9f-abcde', ...(patched.metadata as Json) },
  });
  expect(describeProblems('pod', problems)).toBe('');
}

function proxyOf(patched: Json): Json {
  const spec = patched.spec as Json;
  const all = [...((spec.initContainers as Json[]) ?? []), ...(spec.containers as Json[])];
  const proxy = all.find((c) => c.name === 'sekisho-proxy');
  if (!proxy) throw new Error('no sekisho-proxy container');
  return proxy;
}

/** The file-based SDS resource of the control channel certificate, as the annotation carries it. */
const sdsResource = {
  resources: [
    {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
      name: 'sekisho_xds_client',
      tls_certificate: {
        certificate_chain: { filename: '/etc/sekisho/xds-tls/tls.crt' },
        private_key: { filename: '/etc/sekisho/xds-tls/tls.key' },
        watched_directory: { path: '/etc/sekisho/xds-tls' },
      },
    },
  ],
};

function xdsCluster(bootstrap: Json): Json {
  const channel = ((bootstrap.static_resources as Json).clusters as Json[]).find((c) => c.name === 'sekisho_xds');
  if (!channel) throw new Error('no sekisho_xds cluster');
  return channel;
}

function bootstrapOf(proxy: Json): Json {
  const args = proxy.args as string[];
  return JSON.parse(args[args.indexOf('--config-yaml') + 1] as string);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-injector-'));
  ca = await createCertificateAuthority('sekisho injector test CA');
  await writePair('tls');
  xdsCa = await createCertificateAuthority('sekisho control channel test CA');
  await writeFile(join(dir, 'xds-ca.crt'), xdsCa.certificatePem);
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

describe('injection', () => {
  let port: number;
  beforeAll(async () => {
    port = (await start()).port;
  });

  it('adds a native sidecar first among the init containers, restricted, probed and limited', async () => {
    const { response, patched } = await admit(port, review(pod()));
    expect(response.allowed).toBe(true);
    expectValidPod(patched);
    const spec = patched.spec as Json;
    const init = spec.initContainers as Json[];
    expect(init.map((c) => c.name)).toEqual(['sekisho-proxy']);
    expect(init[0]?.restartPolicy).toBe('Always');
    expect((spec.containers as Json[]).map((c) => c.name)).toEqual(['app']);
    expect(podSecurityRestrictedProblems(spec)).toEqual([]);
    expect(operationalProblems({ initContainers: init })).toEqual([]);
    const proxy = proxyOf(patched);
    expect(proxy.securityContext).toMatchObject({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(proxy.readinessProbe).toMatchObject({ httpGet: { path: '/healthz/ready', port: 15021 } });
    expect(proxy.livenessProbe).toMatchObject({ httpGet: { path: '/healthz/live', port: 15021 }, failureThreshold: 3 });
    expect(proxy.resources).toEqual({
      requests: { cpu: '100m', memory: '128Mi' },
      limits: { cpu: '1', memory: '256Mi' },
    });
    expect((patched.metadata as Json).annotations).toEqual({
      'sekisho.io/status': 'injected',
      'sekisho.io/xds-client-sds': JSON.stringify(sdsResource),
    });
    expect((patched.metadata as Json).labels).toEqual({
      'app.kubernetes.io/name': 'customer',
      'sekisho.io/proxy': 'sidecar',
    });
    expect(spec.volumes).toEqual([
      { name: 'sekisho-proxy-tmp', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
      // The pod's own control channel certificate from csi-driver-spiffe, readable by Envoy's gid.
      {
        name: 'sekisho-proxy-xds-tls',
        csi: {
          driver: 'spiffe.csi.cert-manager.io',
          readOnly: true,
          volumeAttributes: { 'spiffe.csi.cert-manager.io/fs-group': '101' },
        },
      },
      // The file-based SDS resource naming those files, from the pod's annotation.
      {
        name: 'sekisho-proxy-xds-sds',
        downwardAPI: {
          items: [
            {
              path: 'xds-client-sds.json',
              fieldRef: { fieldPath: "metadata.annotations['sekisho.io/xds-client-sds']" },
            },
          ],
        },
      },
    ]);
    expect(proxy.volumeMounts).toEqual([
      { name: 'sekisho-proxy-tmp', mountPath: '/tmp' },
      { name: 'sekisho-proxy-xds-tls', mountPath: '/etc/sekisho/xds-tls', readOnly: true },
      { name: 'sekisho-proxy-xds-sds', mountPath: '/etc/sekisho/xds-sds', readOnly: true },
    ]);
  });

  it('mounts the Secret sekisho-xds-<service> instead when the pod asks for secret mode', async () => {
    const { patched } = await admit(
      port,
      review(pod({ metadata: { annotations: { 'sekisho.io/xds-identity': 'secret' } } })),
    );
    expectValidPod(patched);
    const spec = patched.spec as Json;
    expect((spec.volumes as Json[]).find((v) => v.name === 'sekisho-proxy-xds-tls')).toEqual({
      name: 'sekisho-proxy-xds-tls',
      secret: { secretName: 'sekisho-xds-customer' },
    });
    // The trust anchor is then the Secret's ca.crt; the client pair is still watched over SDS.
    const channel = xdsCluster(bootstrapOf(proxyOf(patched)));
    expect(channel.transport_socket).toMatchObject({
      typed_config: {
        common_tls_context: {
          tls_certificate_sds_secret_configs: [{ name: 'sekisho_xds_client' }],
          validation_context: { trusted_ca: { filename: '/etc/sekisho/xds-tls/ca.crt' } },
        },
      },
    });
  });

  it('denies a pod whose sekisho.io/xds-identity is neither csi nor secret', async () => {
    const { response } = await admit(
      port,
      review(pod({ metadata: { annotations: { 'sekisho.io/xds-identity': 'vault' } } })),
    );
    expect(response.allowed).toBe(false);
    expect((response.status as Json).message).toBe(
      'sekisho-injector: annotation sekisho.io/xds-identity: expected csi or secret, got "vault"',
    );
  });

  it("names the workload in the bootstrap: node cluster, SPIFFE id and ports for the control plane's view", async () => {
    const { patched } = await admit(port, review(pod()));
    const bootstrap = bootstrapOf(proxyOf(patched));
    expect(bootstrap.node).toEqual({
      id: '$(POD_NAME).$(POD_NAMESPACE)',
      cluster: 'sidecar:customer',
      metadata: {
        'sekisho.role': 'sidecar',
        namespace: 'shop',
        service: 'customer',
        service_account: 'customer',
        spiffe_id: 'spiffe://cluster.local/ns/shop/sa/customer',
        pod: '$(POD_NAME)',
        traffic: 'explicit',
        ports: { inbound: 15006, outbound: 15001, app: 3001 },
      },
    });
    const xds = JSON.stringify((bootstrap.static_resources as Json).clusters);
    expect(xds).toContain('"address":"sekisho-control-plane.sekisho-system.svc.cluster.local","port_value":18000');
    // Always mutual TLS to the control plane: the pod's certificate over file-based SDS (renewals
    // picked up with no restart), the control plane's checked against the control channel CA inline.
    expect(xdsCluster(bootstrap).transport_socket).toEqual({
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
        sni: 'sekisho-control-plane.sekisho-system.svc.cluster.local',
        common_tls_context: {
          tls_params: { tls_minimum_protocol_version: 'TLSv1_2' },
          alpn_protocols: ['h2'],
          tls_certificate_sds_secret_configs: [
            {
              name: 'sekisho_xds_client',
              sds_config: {
                resource_api_version: 'V3',
                path_config_source: {
                  path: '/etc/sekisho/xds-sds/xds-client-sds.json',
                  watched_directory: { path: '/etc/sekisho/xds-sds' },
                },
              },
            },
          ],
          validation_context: {
            trusted_ca: { inline_string: `${xdsCa.certificatePem.trim()}\n` },
            match_typed_subject_alt_names: [
              { san_type: 'DNS', matcher: { exact: 'sekisho-control-plane.sekisho-system.svc.cluster.local' } },
              { san_type: 'IP_ADDRESS', matcher: { exact: 'sekisho-control-plane.sekisho-system.svc.cluster.local' } },
            ],
          },
        },
      },
    });
    expect((bootstrap.admin as Json).address).toEqual({ socket_address: { address: '127.0.0.1', port_value: 15000 } });
  });

  it('keeps existing init containers, volumes and annotations, the proxy first', async () => {
    const existing = pod({
      metadata: { annotations: { 'team/owner': 'salon' } },
      spec: {
        initContainers: [{ name: 'migrate', image: 'registry.example/migrate:1' }],
        volumes: [{ name: 'data', emptyDir: {} }],
      },
    });
    const { patched } = await admit(port, review(existing));
    expectValidPod(patched);
    const spec = patched.spec as Json;
    expect((spec.initContainers as Json[]).map((c) => c.name)).toEqual(['sekisho-proxy', 'migrate']);
    expect((spec.volumes as Json[]).map((v) => v.name)).toEqual([
      'data',
      'sekisho-proxy-tmp',
      'sekisho-proxy-xds-tls',
      'sekisho-proxy-xds-sds',
    ]);
    expect((patched.metadata as Json).annotations).toEqual({
      'team/owner': 'salon',
      'sekisho.io/status': 'injected',
      'sekisho.io/xds-client-sds': JSON.stringify(sdsResource),
    });
  });

  it('tunes resources, log level and ports from annotations', async () => {
    const tuned = pod({
      metadata: {
        annotations: {
          'sekisho.io/proxy-cpu': '50m',
          'sekisho.io/proxy-memory': '64Mi',
          'sekisho.io/proxy-cpu-limit': '500m',
          'sekisho.io/proxy-memory-limit': '512Mi',
          'sekisho.io/proxy-log-level': 'debug',
          'sekisho.io/app-port': '8080',
          'sekisho.io/inbound-port': '16006',
          'sekisho.io/outbound-port': '16001',
          'sekisho.io/service': 'customer-api',
        },
      },
    });
    const { patched } = await admit(port, review(tuned));
    expectValidPod(patched);
    const proxy = proxyOf(patched);
    expect(proxy.resources).toEqual({
      requests: { cpu: '50m', memory: '64Mi' },
      limits: { cpu: '500m', memory: '512Mi' },
    });
    const args = proxy.args as string[];
    expect(args[args.indexOf('--log-level') + 1]).toBe('debug');
    expect(proxy.ports).toContainEqual({ name: 'sekisho-inbound', containerPort: 16006, protocol: 'TCP' });
    const bootstrap = bootstrapOf(proxy);
    expect((bootstrap.node as Json).cluster).toBe('sidecar:customer-api');
    expect(((bootstrap.node as Json).metadata as Json).ports).toEqual({ inbound: 16006, outbound: 16001, app: 8080 });
    // The fixed heap follows the memory limit (80 % of 512 Mi).
    expect(JSON.stringify(bootstrap.overload_manager)).toContain(
      `"max_heap_size_bytes":${Math.floor(512 * 2 ** 20 * 0.8)}`,
    );
  });

  it('takes the service name from the app label when app.kubernetes.io/name is absent', async () => {
    const { patched } = await admit(port, review(pod({ metadata: { labels: { app: 'appointment' } } })));
    expect((bootstrapOf(proxyOf(patched)).node as Json).cluster).toBe('sidecar:appointment');
  });

  it('gives the same answer to a dryRun review (the injector has no side effects)', async () => {
    const wet = await admit(port, review(pod()));
    const dry = await admit(port, review(pod(), { dryRun: true }));
    expect(dry.operations).toEqual(wet.operations);
  });

  it('is idempotent: a pod it already injected gets no second sidecar', async () => {
    const { patched } = await admit(port, review(pod()));
    const again = await admit(port, review(patched));
    expect(again.response).toEqual({ uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true });
  });

  const unchanged: Array<[string, Json]> = [
    [
      'a pod annotated sekisho.io/inject=false',
      review(pod({ metadata: { annotations: { 'sekisho.io/inject': 'false' } } })),
    ],
    ['a pod in kube-system', review(pod(), { namespace: 'kube-system' })],
    ["a pod in the control plane's namespace", review(pod(), { namespace: 'sekisho-system' })],
    ['a pod in an excluded namespace', review(pod(), { namespace: 'kube-node-lease' })],
    ['a hostNetwork pod', review(pod({ spec: { hostNetwork: true } }))],
    ['a pod update (containers are immutable)', review(pod(), { operation: 'UPDATE' })],
    [
      'a pod already carrying a sekisho-proxy container',
      review(
        pod({
          spec: {
            containers: [
              { name: 'app', image: 'a' },
              { name: 'sekisho-proxy', image: 'b' },
            ],
          },
        }),
      ),
    ],
  ];
  it.each(unchanged)('allows %s unchanged', async (_name, body) => {
    const { response } = await admit(port, body);
    expect(response).toEqual({ uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true });
  });

  it('allows an object that is not a pod unchanged, with a warning', async () => {
    const { response } = await admit(
      port,
      review(
        { apiVersion: 'v1', kind: 'ConfigMap' },
        {
          kind: { group: '', version: 'v1', kind: 'ConfigMap' },
          resource: { group: '', version: 'v1', resource: 'configmaps' },
        },
      ),
    );
    expect(response.allowed).toBe(true);
    expect(response.patch).toBeUndefined();
    expect(response.warnings).toEqual([
      'sekisho-injector: not injected: only pods are handled, got ConfigMap (configmaps)',
    ]);
  });

  it('allows a pod object it cannot read unchanged, with a warning naming the field', async () => {
    const { response } = await admit(port, review({ apiVersion: 'v1', kind: 'Pod', spec: { containers: 'app' } }));
    expect(response.allowed).toBe(true);
    expect(String((response.warnings as string[])[0])).toMatch(
      /^sekisho-injector: not injected: request\.object\.spec\.containers: /,
    );
  });

  const refused: Array<[string, Json, RegExp]> = [
    [
      'a memory quantity that is not one',
      pod({ metadata: { annotations: { 'sekisho.io/proxy-memory': 'lots' } } }),
      /annotation sekisho\.io\/proxy-memory: expected a quantity .*got "lots"/,
    ],
    [
      'a port out of range',
      pod({ metadata: { annotations: { 'sekisho.io/app-port': '70000' } } }),
      /annotation sekisho\.io\/app-port: expected a port 1-65535, got "70000"/,
    ],
    [
      'an unknown log level',
      pod({ metadata: { annotations: { 'sekisho.io/proxy-log-level': 'loud' } } }),
      /annotation sekisho\.io\/proxy-log-level: expected one of/,
    ],
    [
      'an inject value that is neither true nor false',
      pod({ metadata: { annotations: { 'sekisho.io/inject': 'no' } } }),
      /annotation sekisho\.io\/inject: expected "true" or "false", got "no"/,
    ],
    [
      'an app port equal to the health port',
      pod({ metadata: { annotations: { 'sekisho.io/app-port': '15021' } } }),
      /the app port 15021 equals the health port/,
    ],
    [
      'a pod with no service name',
      pod({ metadata: { labels: {} } }),
      /no service name: set the label app\.kubernetes\.io\/name/,
    ],
    [
      'a service name that is not a DNS label',
      pod({ metadata: { labels: { app: 'Customer_API' } } }),
      /service name "Customer_API"/,
    ],
    [
      'iptables when this injector does not allow it',
      pod({ metadata: { annotations: { 'sekisho.io/traffic': 'iptables' } } }),
      /INJECTOR_ALLOW_IPTABLES=false/,
    ],
  ];
  it.each(refused)('refuses %s, naming the annotation', async (_name, object, message) => {
    const { response } = await admit(port, review(object));
    expect(response.allowed).toBe(false);
    expect(response.patch).toBeUndefined();
    const status = response.status as Json;
    expect(status.code).toBe(400);
    expect(String(status.message)).toMatch(message);
  });
});

describe('settings', () => {
  it('adds a plain container for clusters older than 1.29 (INJECTOR_SIDECAR_MODE=container)', async () => {
    const { port } = await start({ INJECTOR_SIDECAR_MODE: 'container' });
    const { patched } = await admit(port, review(pod()));
    expectValidPod(patched);
    const spec = patched.spec as Json;
    expect(spec.initContainers).toBeUndefined();
    expect((spec.containers as Json[]).map((c) => c.name)).toEqual(['app', 'sekisho-proxy']);
    expect(proxyOf(patched).restartPolicy).toBeUndefined();
    expect(operationalProblems({ containers: [proxyOf(patched)] })).toEqual([]);
  });

  it('adds the iptables init container before the proxy when allowed and asked for', async () => {
    const { port } = await start({ INJECTOR_ALLOW_IPTABLES: 'true' });
    const { patched } = await admit(
      port,
      review(pod({ metadata: { annotations: { 'sekisho.io/traffic': 'iptables' } } })),
    );
    expectValidPod(patched);
    const init = (patched.spec as Json).initContainers as Json[];
    expect(init.map((c) => c.name)).toEqual(['sekisho-init-iptables', 'sekisho-proxy']);
    const iptables = init[0] as Json;
    expect(iptables.image).toBe('registry.example/sekisho/iptables:1');
    expect((iptables.securityContext as Json).capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    const script = (iptables.command as string[])[2];
    expect(script).toContain('--dport 3001 -j REDIRECT --to-ports 15006');
    expect(script).toContain('-m owner --uid-owner 101 -j RETURN');
    expect(script).toContain('-p tcp -j REDIRECT --to-ports 15001');
    // The price, stated by the test: this pod no longer passes Pod Security "restricted".
    expect(podSecurityRestrictedProblems(patched.spec as Json)).toEqual([
      'initContainers[sekisho-init-iptables]: runAsNonRoot must be true (container or pod)',
      'initContainers[sekisho-init-iptables]: runAsUser is 0',
      'initContainers[sekisho-init-iptables]: capability NET_ADMIN added',
      'initContainers[sekisho-init-iptables]: capability NET_RAW added',
    ]);
  });

  it('refuses a bad setting at start-up, naming the variable', () => {
    expect(() => config({ INJECTOR_ALLOW_IPTABLES: 'true', INJECTOR_IPTABLES_IMAGE: '' })).toThrow();
    const parsed = configSchema.safeParse({
      INJECTOR_TLS_CERT_FILE: 'a',
      INJECTOR_TLS_KEY_FILE: 'b',
      INJECTOR_XDS_IDENTITY: 'secret',
      INJECTOR_INBOUND_PORT: '15021',
    });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]?.path).toEqual(['INJECTOR_HEALTH_PORT']);
  });

  it('needs the control channel CA in csi mode (the default), not in secret mode', () => {
    const base = { INJECTOR_TLS_CERT_FILE: 'a', INJECTOR_TLS_KEY_FILE: 'b' };
    const csi = configSchema.safeParse(base);
    expect(csi.error?.issues.map((issue) => [issue.path, issue.message])).toEqual([
      [
        ['INJECTOR_XDS_CA_FILE'],
        "required with INJECTOR_XDS_IDENTITY=csi (the default): the control channel CA's PEM, the sidecars' trust anchor for the control plane",
      ],
    ]);
    expect(configSchema.safeParse({ ...base, INJECTOR_XDS_IDENTITY: 'secret' }).success).toBe(true);
    expect(configSchema.safeParse({ ...base, INJECTOR_XDS_IDENTITY: 'spire' }).success).toBe(false);
  });

  it('refuses to start with a control channel CA file that is not a CA certificate, naming the variable', async () => {
    await writeFile(
      join(dir, 'not-a-ca.crt'),
      (await issueServerCertificate(ca, { commonName: 'leaf' })).certificatePem,
    );
    await expect(start({ INJECTOR_XDS_CA_FILE: join(dir, 'not-a-ca.crt') })).rejects.toThrow(
      /^INJECTOR_XDS_CA_FILE: .*not-a-ca\.crt: .*is not a CA/,
    );
  });
});

describe('malformed requests', () => {
  let port: number;
  beforeAll(async () => {
    port = (await start()).port;
  });

  const cases: Array<[string, string, RegExp]> = [
    ['a body that is not JSON', '{"apiVersion":', /^body is not JSON: /],
    [
      'an AdmissionReview of another version',
      JSON.stringify({ ...review(pod()), apiVersion: 'admission.k8s.io/v1beta1' }),
      /apiVersion: expected apiVersion admission\.k8s\.io\/v1/,
    ],
    [
      'a review without a request',
      JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }),
      /request: /,
    ],
    [
      'a request without a uid',
      JSON.stringify(review(pod(), { uid: undefined })),
      /request\.uid: required: the request uid/,
    ],
    ['a JSON array', '[]', /\(review\): /],
  ];
  it.each(cases)('answers %s with HTTP 400 naming the field', async (_name, body, message) => {
    const { status, json } = await post(port, body);
    expect(status).toBe(400);
    expect(String(json.error)).toMatch(message);
  });

  it('answers a wrong content type, method and path with 415, 405 and 404', async () => {
    expect((await post(port, '{}', { contentType: 'text/plain' })).status).toBe(415);
    expect((await post(port, '', { method: 'GET' })).status).toBe(405);
    expect((await post(port, '{}', { path: '/mutate' })).status).toBe(404);
  });

  it('refuses a body over 8 MiB with 413 and keeps serving', async () => {
    const { status } = await post(port, 'x'.repeat(9 * 1024 * 1024));
    expect(status).toBe(413);
    const { response } = await admit(port, review(pod()));
    expect(response.allowed).toBe(true);
  });
});

describe('serving certificate', () => {
  function servedSerial(port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, ca: ca.certificatePem, servername: 'localhost' }, () => {
        const serial = socket.getPeerX509Certificate()?.serialNumber ?? '';
        socket.end();
        resolve(serial.toLowerCase());
      });
      socket.on('error', reject);
    });
  }

  it('serves a renewed certificate without a restart, and keeps the old one while the new pair does not match', async () => {
    const renewDir = await mkdtemp(join(dir, 'renew-'));
    const original = dir;
    dir = renewDir;
    await writeFile(join(dir, 'xds-ca.crt'), xdsCa.certificatePem);
    try {
      const first = await writePair('tls');
      const { port } = await start();
      expect(await servedSerial(port)).toBe(first.serialHex.toLowerCase());
      // A key of another certificate: refused, the first pair keeps serving.
      const other = await issueServerCertificate(ca, { commonName: 'other' });
      await writeFile(join(dir, 'tls.key'), other.privateKeyPem);
      await new Promise((r) => setTimeout(r, 300));
      expect(await servedSerial(port)).toBe(first.serialHex.toLowerCase());
      const second = await writePair('tls');
      const deadline = Date.now() + 15_000;
      let serial = '';
      while (Date.now() < deadline) {
        serial = await servedSerial(port);
        if (serial === second.serialHex.toLowerCase()) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(serial).toBe(second.serialHex.toLowerCase());
      expect(new X509Certificate(second.certificatePem).serialNumber.toLowerCase()).toBe(serial);
    } finally {
      dir = original;
    }
  });

  it('puts a renewed control channel CA into new bootstraps without a restart, and keeps the last good one', async () => {
    const caFile = join(dir, 'xds-ca-renewed.crt');
    await writeFile(caFile, xdsCa.certificatePem);
    const { port } = await start({ INJECTOR_XDS_CA_FILE: caFile });
    const inlineCa = async () => {
      const { patched } = await admit(port, review(pod()));
      const channel = xdsCluster(bootstrapOf(proxyOf(patched)));
      const tls = channel.transport_socket as {
        typed_config: { common_tls_context: { validation_context: { trusted_ca: { inline_string: string } } } };
      };
      return tls.typed_config.common_tls_context.validation_context.trusted_ca.inline_string;
    };
    expect(await inlineCa()).toBe(`${xdsCa.certificatePem.trim()}\n`);
    // A file that is not a CA (a leaf): refused, the CA before keeps being injected.
    await writeFile(`${caFile}.tmp`, (await issueServerCertificate(ca, { commonName: 'leaf' })).certificatePem);
    await rename(`${caFile}.tmp`, caFile);
    await new Promise((r) => setTimeout(r, 400));
    expect(await inlineCa()).toBe(`${xdsCa.certificatePem.trim()}\n`);
    // A new CA, written the way the kubelet swaps a volume.
    const next = await createCertificateAuthority('sekisho control channel test CA 2');
    await writeFile(`${caFile}.tmp`, next.certificatePem);
    await rename(`${caFile}.tmp`, caFile);
    const deadline = Date.now() + 15_000;
    let current = '';
    while (Date.now() < deadline) {
      current = await inlineCa();
      if (current.includes(next.certificatePem.trim())) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(current).toBe(`${next.certificatePem.trim()}\n`);
  });
});
