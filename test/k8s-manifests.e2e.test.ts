import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { compileDefinitionFile } from '@sekisho/control-plane/definition/load';
import { configSchema as controlPlaneConfig } from '@sekisho/control-plane/main';
import { createControlChannelCertificates } from '@sekisho/devstack/control-channel-certs';
import { validateEnvoyConfig } from '@sekisho/devstack/envoy';
import { operationalProblems, podSecurityRestrictedProblems } from '@sekisho/devstack/kube-policy';
import { describeProblems, validateObject } from '@sekisho/devstack/kube-schema';
import { findKustomize, kustomizeBuild, kustomizeInstallHint } from '@sekisho/devstack/kustomize';
import { repoRoot } from '@sekisho/devstack/paths';
import { configSchema as extAuthzConfig } from '@sekisho/ext-authz/config';
import { namespaceLabel, proxyLabel, proxyXdsSecretName } from '@sekisho/injector/annotations';
import { configSchema as injectorConfig } from '@sekisho/injector/config';
import { webhookPath } from '@sekisho/injector/server';
import { configSchema as rateLimitConfig } from '@sekisho/ratelimit-service/config';
import { createMetricsRegistry } from '@sekisho/service-kit/metrics';
import { redisSettingsOf, resolveRedisTopology } from '@sekisho/service-kit/redis-topology';
import { workerCountFrom, workersVariable } from '@sekisho/service-kit/workers';
import { configSchema as threatDetectorConfig } from '@sekisho/threat-detector/config';
import { createAlertMetrics, createDetectorMetrics } from '@sekisho/threat-detector/metrics';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import {
  type Request,
  type Requester,
  rbacAllows,
  requestOf,
  review,
  selectorMatches,
  signerName,
} from './certificate-request-policy';
import {
  expectedIngressBootstrap,
  expectedIngressSdsFiles,
  ingressBootstrapFile,
  ingressSdsDir,
  ingressXdsTlsDir,
} from './k8s-ingress-bootstrap';

// k8s/ rendered by kustomize for each overlay, then checked offline: every object against the
// Kubernetes (and Prometheus-operator, cert-manager) schemas with unknown fields refused, Pod
// Security "restricted" and probes/limits on every container, a PDB per Deployment, selectors
// that select, NetworkPolicies that let exactly the intended traffic through, env variables the
// services know, and the ingress bootstrap equal to envoy/bootstrap.yaml rendered.

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests, schema-checked by the first test of each overlay; typed access would bury the policy checks in casts.
type Json = Record<string, any>;
const overlays = ['dev', 'prod'] as const;
const rendered = new Map<string, Json[]>();

const obj = (v: unknown): Json => (typeof v === 'object' && v !== null ? (v as Json) : {});
const named = (objects: Json[], kind: string) => objects.filter((o) => o.kind === kind);
const id = (o: Json) => `${o.kind}/${o.metadata?.name}`;
const workloads = (objects: Json[]) => objects.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
const matches = (selector: Json | undefined, labels: Json) =>
  Object.entries(obj(selector?.matchLabels)).every(([k, v]) => labels[k] === v) &&
  (selector?.matchExpressions ?? []).every((e: Json) => {
    const has = Object.hasOwn(labels, e.key);
    if (e.operator === 'In') return has && e.values.includes(labels[e.key]);
    if (e.operator === 'NotIn') return !has || !e.values.includes(labels[e.key]);
    if (e.operator === 'Exists') return has;
    if (e.operator === 'DoesNotExist') return !has;
    throw new Error(`unknown operator ${e.operator}`);
  });

beforeAll(async () => {
  const bin = findKustomize();
  if (!bin) throw new Error(kustomizeInstallHint);
  for (const overlay of overlays) {
    const yaml = await kustomizeBuild(bin, join(repoRoot, 'k8s', 'overlays', overlay));
    rendered.set(
      overlay,
      parseAllDocuments(yaml).map((d) => d.toJSON() as Json),
    );
  }
});

describe.each(overlays)('k8s/overlays/%s', (overlay) => {
  const objects = () => rendered.get(overlay) ?? [];

  it('validates every object against its schema, refusing unknown fields', () => {
    expect(objects().length).toBeGreaterThan(30);
    const problems = objects().flatMap((o) => {
      const found = validateObject(o);
      return found.length ? [describeProblems(id(o), found)] : [];
    });
    expect(problems.join('\n')).toBe('');
  });

  it('puts everything in sekisho-system, which enforces Pod Security restricted', () => {
    const ns = named(objects(), 'Namespace');
    expect(ns.map((n) => n.metadata.name)).toEqual(['sekisho-system']);
    expect(ns[0]?.metadata.labels).toMatchObject({
      'pod-security.kubernetes.io/enforce': 'restricted',
      'pod-security.kubernetes.io/enforce-version': 'latest',
    });
    const clusterScoped = new Set(['Namespace', 'MutatingWebhookConfiguration']);
    for (const o of objects())
      if (!clusterScoped.has(o.kind)) expect(o.metadata.namespace, id(o)).toBe('sekisho-system');
  });

  it('runs every pod Pod Security restricted, with a read-only root, limits and probes (liveness after 3 failures)', () => {
    const problems = workloads(objects()).flatMap((w) => {
      const spec = w.spec.template.spec;
      return [...podSecurityRestrictedProblems(spec), ...operationalProblems(spec)].map((p) => `${id(w)}: ${p}`);
    });
    expect(problems).toEqual([]);
    expect(workloads(objects()).length).toBeGreaterThanOrEqual(overlay === 'dev' ? 6 : 5);
  });

  it('has a PDB for every Deployment, and every PDB and Service selects pods', () => {
    const pdbs = named(objects(), 'PodDisruptionBudget');
    for (const d of named(objects(), 'Deployment')) {
      const labels = d.spec.template.metadata.labels;
      expect(matches(d.spec.selector, labels), `${id(d)} selector`).toBe(true);
      expect(pdbs.filter((p) => matches(p.spec.selector, labels)).map(id), `${id(d)} PDB`).toHaveLength(1);
    }
    const podLabels = workloads(objects()).map((w) => w.spec.template.metadata.labels);
    for (const p of pdbs)
      expect(
        podLabels.some((l) => matches(p.spec.selector, l)),
        id(p),
      ).toBe(true);
    for (const s of named(objects(), 'Service')) {
      const selected = workloads(objects()).filter((w) =>
        matches({ matchLabels: s.spec.selector }, w.spec.template.metadata.labels),
      );
      expect(selected.map(id), id(s)).toHaveLength(1);
      const containerPorts = selected[0]?.spec.template.spec.containers.flatMap((c: Json) => c.ports ?? []) ?? [];
      for (const port of s.spec.ports)
        expect(
          containerPorts.some((p: Json) => p.name === port.targetPort || p.containerPort === port.targetPort),
          `${id(s)} targetPort ${port.targetPort}`,
        ).toBe(true);
    }
  });

  it('scales the policy services, the threat detector and the ingress with an HPA, the control plane and injector at 2 replicas', () => {
    const hpas = named(objects(), 'HorizontalPodAutoscaler');
    const deployments = new Map(named(objects(), 'Deployment').map((d) => [d.metadata.name, d]));
    expect(hpas.map((h) => h.spec.scaleTargetRef.name).sort()).toEqual([
      'sekisho-ext-authz',
      'sekisho-ingress',
      'sekisho-ratelimit',
      'sekisho-threat-detector',
    ]);
    for (const h of hpas) {
      const target = deployments.get(h.spec.scaleTargetRef.name);
      expect(target, id(h)).toBeDefined();
      // A replicas field would fight the HPA on every apply.
      expect(target?.spec.replicas, id(h)).toBeUndefined();
      expect(h.spec.minReplicas).toBeGreaterThanOrEqual(2);
    }
    expect(deployments.get('sekisho-control-plane')?.spec.replicas).toBe(2);
    expect(deployments.get('sekisho-injector')?.spec.replicas).toBe(2);
  });

  it('gives every pod its own ServiceAccount without a token and grants no API access at all', () => {
    const accounts = new Map(named(objects(), 'ServiceAccount').map((a) => [a.metadata.name, a]));
    for (const a of accounts.values()) expect(a.automountServiceAccountToken, id(a)).toBe(false);
    const used = workloads(objects()).map((w) => w.spec.template.spec.serviceAccountName);
    expect(new Set(used).size).toBe(used.length);
    for (const w of workloads(objects())) {
      expect(accounts.has(w.spec.template.spec.serviceAccountName), id(w)).toBe(true);
      expect(w.spec.template.spec.automountServiceAccountToken, id(w)).toBe(false);
    }
    // No component reads the API server (the control plane finds services by DNS).
    expect(
      objects()
        .filter((o) => /Role/.test(o.kind))
        .map(id),
    ).toEqual([]);
  });

  it('mounts the definition and the certificates as whole volumes (the kubelet never updates a subPath)', () => {
    for (const w of workloads(objects()))
      for (const c of w.spec.template.spec.containers)
        for (const m of c.volumeMounts ?? []) expect(m.subPath, `${id(w)} ${m.name}`).toBeUndefined();
    const cp = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-control-plane') as Json;
    const env = Object.fromEntries(cp.spec.template.spec.containers[0].env.map((e: Json) => [e.name, e.value]));
    expect(env.CONTROL_PLANE_DEFINITION).toBe('/etc/sekisho/definition/gateway.yaml');
    const definition = named(objects(), 'ConfigMap').find((c) => c.metadata.name === 'sekisho-gateway-definition');
    expect(Object.keys(definition?.data ?? {})).toEqual(['gateway.yaml']);
    expect(cp.spec.template.spec.volumes).toContainEqual({
      name: 'definition',
      configMap: { name: 'sekisho-gateway-definition' },
    });
  });

  it("protects the control plane's admin API with a bearer token from a whole Secret volume", () => {
    const cp = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-control-plane') as Json;
    const pod = cp.spec.template.spec;
    const env = Object.fromEntries(pod.containers[0].env.map((e: Json) => [e.name, e.value]));
    // The admin server listens on the pod's address (the kubelet probes it), so a token is required.
    expect(env.CONTROL_PLANE_ADMIN_HOST ?? env.CONTROL_PLANE_HOST).toBe('0.0.0.0');
    expect(env.CONTROL_PLANE_ADMIN_TOKEN_FILE).toBe('/etc/sekisho/admin-token/token');
    const mount = pod.containers[0].volumeMounts.find((m: Json) => m.mountPath === '/etc/sekisho/admin-token');
    expect(mount).toMatchObject({ readOnly: true });
    expect(pod.volumes.find((v: Json) => v.name === mount.name)).toEqual({
      name: mount.name,
      secret: { secretName: 'sekisho-control-plane-admin-token' },
    });
    // Probes use only the open paths.
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      expect(['/healthz', '/readyz'], probe).toContain(pod.containers[0][probe].httpGet.path);
    }
  });

  it('gives the control plane the mesh CA as a whole Secret volume, an intermediate under a self-signed mesh root', () => {
    const cp = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-control-plane') as Json;
    const pod = cp.spec.template.spec;
    const env = Object.fromEntries(pod.containers[0].env.map((e: Json) => [e.name, e.value]));
    const dir = env.CONTROL_PLANE_MESH_CA_DIR as string;
    const mount = pod.containers[0].volumeMounts.find((m: Json) => m.mountPath === dir);
    expect(mount, 'CONTROL_PLANE_MESH_CA_DIR is a mounted volume').toMatchObject({ readOnly: true });
    expect(mount.subPath).toBeUndefined();
    const volume = pod.volumes.find((v: Json) => v.name === mount.name);
    expect(volume).toEqual({ name: mount.name, secret: { secretName: 'sekisho-mesh-ca' } });
    // cert-manager's alternative: the Secret is an intermediate CA's, issued by a CA Issuer over a self-signed root.
    const certificates = named(objects(), 'Certificate');
    const issuers = named(objects(), 'Issuer');
    const intermediate = certificates.find((c) => c.spec.secretName === 'sekisho-mesh-ca') as Json;
    expect(intermediate.spec).toMatchObject({ isCA: true, privateKey: { rotationPolicy: 'Always' } });
    expect(intermediate.spec.usages).toContain('cert sign');
    const rootIssuer = issuers.find((i) => i.metadata.name === intermediate.spec.issuerRef.name) as Json;
    const root = certificates.find((c) => c.spec.secretName === rootIssuer.spec.ca.secretName) as Json;
    expect(root.spec).toMatchObject({ isCA: true, privateKey: { rotationPolicy: 'Never' } });
    expect(issuers.find((i) => i.metadata.name === root.spec.issuerRef.name)?.spec.selfSigned).toEqual({});
    // The mesh has a root of its own: no control channel or webhook certificate chains to it,
    // only the control plane's signer and the sidecars' per-pod certificates' (csi-driver-spiffe).
    const meshRootIssuers = new Set([rootIssuer.metadata.name]);
    for (const c of certificates)
      if (meshRootIssuers.has(c.spec.issuerRef.name))
        expect(['sekisho-mesh-ca', 'sekisho-mesh-spiffe-ca'], id(c)).toContain(c.metadata.name);
    const spiffe = certificates.find((c) => c.spec.secretName === 'sekisho-mesh-spiffe-ca') as Json;
    expect(spiffe.spec).toMatchObject({ isCA: true, issuerRef: intermediate.spec.issuerRef });
  });

  it("gives the injector the channel CA alone (sidecars' trust anchor in csi mode), csi mode by default", () => {
    const injector = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-injector') as Json;
    const pod = injector.spec.template.spec;
    const env = Object.fromEntries(pod.containers[0].env.map((e: Json) => [e.name, e.value]));
    expect(env.INJECTOR_XDS_IDENTITY).toBe('csi');
    const file = env.INJECTOR_XDS_CA_FILE as string;
    const mount = pod.containers[0].volumeMounts.find((m: Json) => file.startsWith(`${m.mountPath}/`));
    expect(mount).toMatchObject({ readOnly: true });
    expect(mount.subPath).toBeUndefined();
    const volume = pod.volumes.find((v: Json) => v.name === mount.name);
    // Only ca.crt of the control plane's server Secret: the server's key is not in the injector.
    expect(volume.secret.items).toEqual([{ key: 'ca.crt', path: file.slice(mount.mountPath.length + 1) }]);
    const certificate = named(objects(), 'Certificate').find((c) => c.spec.secretName === volume.secret.secretName);
    expect(certificate?.metadata.name).toBe('sekisho-control-plane-tls');
  });

  it('runs every control channel client over mutual TLS with a cert-manager certificate of its identity', () => {
    const certificates = new Map(named(objects(), 'Certificate').map((c) => [c.spec.secretName, c]));
    const issuers = new Map(named(objects(), 'Issuer').map((i) => [i.metadata.name, i]));
    const envOf = (c: Json): Record<string, string> =>
      Object.fromEntries((c.env ?? []).filter((e: Json) => 'value' in e).map((e: Json) => [e.name, e.value]));
    // The Certificate whose Secret is mounted (whole) at the directory of `file` in `pod`.
    const certificateOf = (w: Json, c: Json, file: string) => {
      const mount = (c.volumeMounts ?? []).find((m: Json) => file.startsWith(`${m.mountPath}/`));
      expect(mount, `${id(w)}: ${file} is on no mounted volume`).toBeDefined();
      expect(mount.subPath, `${id(w)}: ${file}`).toBeUndefined();
      const volume = w.spec.template.spec.volumes.find((v: Json) => v.name === mount.name);
      const secretName = volume?.secret?.secretName;
      expect(secretName, `${id(w)}: ${file} is not on a Secret volume`).toBeDefined();
      expect(['ca.crt', 'tls.crt', 'tls.key']).toContain(file.slice(mount.mountPath.length + 1));
      const certificate = certificates.get(secretName);
      expect(certificate, `${id(w)}: Secret ${secretName} comes from no Certificate`).toBeDefined();
      return certificate as Json;
    };
    // One CA for the channel: a self-signed root, its CA Issuer, every channel certificate from it.
    const channelIssuer = (certificate: Json) => {
      expect(certificate.spec.issuerRef, id(certificate)).toMatchObject({ kind: 'Issuer', group: 'cert-manager.io' });
      const issuer = issuers.get(certificate.spec.issuerRef.name) as Json;
      const ca = certificates.get(issuer?.spec.ca?.secretName) as Json;
      expect(ca?.spec.isCA, `${id(certificate)}: issued by a CA Issuer`).toBe(true);
      expect(issuers.get(ca.spec.issuerRef.name)?.spec.selfSigned, id(ca)).toEqual({});
      // Renewed before expiry, with a new key.
      const hours = (d: string) => Number(/^(\d+)h$/.exec(d)?.[1]);
      expect(hours(certificate.spec.renewBefore), id(certificate)).toBeLessThan(hours(certificate.spec.duration));
      expect(hours(certificate.spec.duration), id(certificate)).toBeLessThanOrEqual(2160);
      expect(certificate.spec.privateKey.rotationPolicy, id(certificate)).toBe('Always');
      return issuer.metadata.name as string;
    };
    const deployment = (name: string) => named(objects(), 'Deployment').find((d) => d.metadata.name === name) as Json;

    const cp = deployment('sekisho-control-plane');
    const cpEnv = envOf(cp.spec.template.spec.containers[0]);
    expect(Object.keys(cpEnv)).not.toContain('CONTROL_PLANE_ALLOW_INSECURE');
    const trustDomain = cpEnv.CONTROL_PLANE_TLS_TRUST_DOMAIN ?? 'sekisho.local';
    const server = certificateOf(cp, cp.spec.template.spec.containers[0], cpEnv.CONTROL_PLANE_TLS_CERT_FILE as string);
    for (const v of ['CONTROL_PLANE_TLS_KEY_FILE', 'CONTROL_PLANE_TLS_CLIENT_CA_FILE'])
      expect(certificateOf(cp, cp.spec.template.spec.containers[0], cpEnv[v] as string), v).toBe(server);
    expect(server.spec.usages).toContain('server auth');
    const issuer = channelIssuer(server);

    // Every client: which variables, which identity.
    const expectClient = (w: Json, c: Json, files: string[], serverName: string, view: string) => {
      const [first, ...rest] = files.map((f) => certificateOf(w, c, f));
      for (const other of rest) expect(other, id(w)).toBe(first);
      const client = first as Json;
      expect(client.spec.uris, id(w)).toEqual([`spiffe://${trustDomain}/${view}`]);
      expect(client.spec.usages, id(w)).toContain('client auth');
      expect(channelIssuer(client), id(w)).toBe(issuer);
      expect(server.spec.dnsNames, `${id(w)}: server name`).toContain(serverName);
    };
    const views: Record<string, string> = { EXT_AUTHZ: 'ext-authz', RATELIMIT: 'ratelimit' };
    let clients = 0;
    for (const w of workloads(objects()))
      for (const c of w.spec.template.spec.containers) {
        const env = envOf(c);
        for (const [name, address] of Object.entries(env)) {
          const prefix = /^(.+)_XDS_ADDRESS$/.exec(name)?.[1];
          if (!prefix || prefix === 'INJECTOR') continue;
          clients++;
          const missing = ['CA_FILE', 'CERT_FILE', 'KEY_FILE', 'SERVER_NAME'].filter((v) => !env[`${prefix}_XDS_${v}`]);
          expect(missing, `${id(w)}: ${prefix}_XDS_* without`).toEqual([]);
          expect(env[`${prefix}_XDS_ALLOW_INSECURE`] ?? 'false', id(w)).toBe('false');
          expect(address.replace(/:\d+$/, ''), id(w)).toBe(env[`${prefix}_XDS_SERVER_NAME`]);
          const files = ['CA_FILE', 'CERT_FILE', 'KEY_FILE'].map((v) => env[`${prefix}_XDS_${v}`] as string);
          expectClient(w, c, files, env[`${prefix}_XDS_SERVER_NAME`] as string, views[prefix] as string);
        }
      }
    expect(clients).toBe(2);

    // The ingress Envoy: its bootstrap's xds cluster, and the files mounted where it points.
    const ingress = deployment('sekisho-ingress');
    const bootstrapName = ingress.spec.template.spec.volumes.find((v: Json) => v.name === 'bootstrap').configMap.name;
    const bootstrapFiles = named(objects(), 'ConfigMap').find((m) => m.metadata.name === bootstrapName)?.data;
    const bootstrap = parse(bootstrapFiles['bootstrap.yaml']);
    // An SDS file of the ConfigMap (mounted on /etc/envoy) → its one Secret resource.
    const sds = (config: Json) => {
      const path: string = config.sds_config.path_config_source.path;
      expect(path.startsWith(`${ingressSdsDir}/`), path).toBe(true);
      const [resource] = parse(bootstrapFiles[path.slice(ingressSdsDir.length + 1)]).resources;
      expect(resource.name).toBe(config.name);
      return resource;
    };
    expect(bootstrap.node.cluster).toBe('sekisho-ingress');
    const xds = bootstrap.static_resources.clusters.find((c: Json) => c.name === 'sekisho_xds');
    const tls = xds.transport_socket.typed_config;
    expect(xds.transport_socket.name).toBe('envoy.transport_sockets.tls');
    const context = tls.common_tls_context;
    const [clientConfig] = context.tls_certificate_sds_secret_configs;
    const pair = sds(clientConfig).tls_certificate;
    const ca = sds(context.combined_validation_context.validation_context_sds_secret_config).validation_context;
    expectClient(
      ingress,
      ingress.spec.template.spec.containers[0],
      [pair.certificate_chain.filename, pair.private_key.filename, ca.trusted_ca.filename],
      tls.sni,
      'ingress',
    );
    // Envoy watches the directory the Secret is mounted on (the kubelet swaps its ..data link).
    const secretMount = ingress.spec.template.spec.containers[0].volumeMounts.find(
      (m: Json) => m.name === 'xds-tls',
    ).mountPath;
    expect(pair.watched_directory.path).toBe(secretMount);
    expect(ca.watched_directory.path).toBe(secretMount);
    expect(context.combined_validation_context.default_validation_context.match_typed_subject_alt_names).toContainEqual(
      {
        san_type: 'DNS',
        matcher: { exact: tls.sni },
      },
    );
    expect(xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address).toBe(tls.sni);

    // Sidecars: the injector's server name is one the control plane's certificate carries.
    const injector = injectorConfig.parse(envOf(deployment('sekisho-injector').spec.template.spec.containers[0]));
    expect(server.spec.dnsNames).toContain(
      injector.INJECTOR_XDS_SERVER_NAME ?? injector.INJECTOR_XDS_ADDRESS.replace(/:\d+$/, ''),
    );
  });

  it('sets only environment variables the services know, with values their schemas accept', () => {
    const schemas: Record<string, { shape: Json; safeParse(v: unknown): { success: boolean; error?: unknown } }> = {
      'sekisho-control-plane': controlPlaneConfig,
      'sekisho-ext-authz': extAuthzConfig,
      'sekisho-ratelimit': rateLimitConfig,
      'sekisho-injector': injectorConfig,
      'sekisho-threat-detector': threatDetectorConfig,
    };
    // service-kit's own variable, read by runService: the policy services may run several
    // workers; the threat detector runs one process (runService refuses another value).
    const withWorkers = new Set(['sekisho-ext-authz', 'sekisho-ratelimit', 'sekisho-threat-detector']);
    const oneProcess = new Set(['sekisho-threat-detector']);
    // What a Secret key stands for when the check needs a value.
    const secretValue = (key: string) =>
      key === 'url' ? 'https://hooks.slack.example/services/T0/B0/x' : 'redis://redis.example:6379';
    for (const [name, schema] of Object.entries(schemas)) {
      const d = named(objects(), 'Deployment').find((x) => x.metadata.name === name) as Json;
      const all: Json[] = d.spec.template.spec.containers[0].env;
      const workers = all.find((e) => e.name === workersVariable);
      if (withWorkers.has(name)) {
        expect(workers, `${name}: ${workersVariable} next to the CPU limit`).toBeDefined();
        expect(workerCountFrom({ [workersVariable]: workers?.value })).toBeGreaterThanOrEqual(1);
        if (oneProcess.has(name)) expect(workers?.value, name).toBe('1');
      }
      const env = withWorkers.has(name) ? all.filter((e) => e !== workers) : all;
      const variables = new Set(Object.keys(schema.shape));
      expect(variables.size, `${name}: schema keys`).toBeGreaterThan(3);
      for (const e of env) expect(variables.has(e.name), `${name}: ${e.name}`).toBe(true);
      const literal = Object.fromEntries(
        env.map((e) => [
          e.name,
          e.value ?? (e.valueFrom?.fieldRef ? 'pod-name-1' : secretValue(e.valueFrom?.secretKeyRef?.key)),
        ]),
      );
      const parsed = schema.safeParse(literal);
      expect(parsed.success, `${name}: ${JSON.stringify(parsed.error)}`).toBe(true);
    }
  });

  it('reaches Redis through Sentinel in prod (TLS, ACL users, everything from the Secret), the StatefulSet in dev', () => {
    const components = {
      'sekisho-ext-authz': 'EXT_AUTHZ',
      'sekisho-ratelimit': 'RATELIMIT',
      'sekisho-threat-detector': 'THREAT',
    } as const;
    // What `kubectl create secret generic sekisho-redis` in the overlay's comment holds.
    const secret: Record<string, string> = {
      sentinels: 'rediss://sentinel-0.redis.internal:26379,rediss://sentinel-1.redis.internal:26379',
      'master-name': 'sekisho',
      username: 'sekisho',
      password: 'data-node-password',
      'sentinel-username': 'sekisho',
      'sentinel-password': 'sentinel-password',
    };
    for (const [name, prefix] of Object.entries(components)) {
      const pod = (named(objects(), 'Deployment').find((d) => d.metadata.name === name) as Json).spec.template.spec;
      const container = pod.containers[0];
      const env: Json[] = (container.env ?? []).filter((e: Json) => e.name.startsWith(`${prefix}_REDIS_`));
      const byName = new Map(env.map((e) => [e.name, e]));
      if (overlay === 'dev') {
        expect(byName.get(`${prefix}_REDIS_URL`)?.value, name).toBe(
          'redis://sekisho-redis.sekisho-system.svc.cluster.local:6379',
        );
        expect(byName.has(`${prefix}_REDIS_MODE`), name).toBe(false);
        continue;
      }
      expect(byName.get(`${prefix}_REDIS_MODE`)?.value, name).toBe('sentinel');
      // Addresses and credentials only from the Secret, never a literal in git.
      for (const setting of [
        'URL',
        'SENTINEL_MASTER',
        'USERNAME',
        'PASSWORD',
        'SENTINEL_USERNAME',
        'SENTINEL_PASSWORD',
      ]) {
        const ref = byName.get(`${prefix}_REDIS_${setting}`)?.valueFrom?.secretKeyRef;
        expect(ref?.name, `${name} ${prefix}_REDIS_${setting}`).toBe('sekisho-redis');
        expect(Object.keys(secret), `${name} ${prefix}_REDIS_${setting}`).toContain(ref?.key);
      }
      // The CA from the same Secret, as a file, and nothing else of it on disk.
      const caFile = byName.get(`${prefix}_REDIS_TLS_CA_FILE`)?.value as string;
      const mount = container.volumeMounts.find((m: Json) => caFile.startsWith(`${m.mountPath}/`));
      const volume = pod.volumes.find((v: Json) => v.name === mount?.name);
      expect(volume?.secret, name).toEqual({ secretName: 'sekisho-redis', items: [{ key: 'ca.crt', path: 'ca.crt' }] });
      // With the Secret's values the service's own parser accepts it as a Sentinel topology.
      const values = Object.fromEntries(
        env
          .filter((e) => !e.name.endsWith('_TLS_CA_FILE'))
          .map((e) => [e.name, e.value ?? secret[e.valueFrom.secretKeyRef.key]]),
      );
      const topology = resolveRedisTopology(redisSettingsOf(values, prefix, values[`${prefix}_REDIS_URL`]), prefix);
      expect(topology, name).toMatchObject({
        mode: 'sentinel',
        sentinel: { masterName: 'sekisho', username: 'sekisho', password: 'sentinel-password' },
        username: 'sekisho',
        password: 'data-node-password',
        tls: {},
      });
    }
    expect(named(objects(), 'StatefulSet').map((s) => s.metadata.name)).toEqual(
      overlay === 'dev' ? ['sekisho-redis'] : [],
    );
  });

  it('references Sekisho images by one registry and tag, and pins Envoy', () => {
    const images = workloads(objects()).flatMap((w) =>
      w.spec.template.spec.containers.map((c: Json) => c.image as string),
    );
    const sekisho = images.filter((i) => i.includes('/sekisho/'));
    expect(sekisho.length).toBe(5);
    const prefixes = new Set(sekisho.map((i) => i.replace(/\/sekisho\/[^:]+/, '/sekisho/*')));
    expect(prefixes.size).toBe(1);
    expect(images).toContain('envoyproxy/envoy:v1.40.0');
    for (const i of images) expect(i, 'every image has a tag').toMatch(/:[\w.-]+$/);
  });

  it('registers the webhook deliberately: fail closed, no side effects, opted-in namespaces only, CA from cert-manager', () => {
    const [config] = named(objects(), 'MutatingWebhookConfiguration');
    const webhook = config?.webhooks[0];
    expect(webhook).toMatchObject({
      failurePolicy: 'Fail',
      sideEffects: 'None',
      admissionReviewVersions: ['v1'],
      clientConfig: {
        service: { name: 'sekisho-injector', namespace: 'sekisho-system', path: webhookPath, port: 443 },
      },
      rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
    });
    const ns = (name: string, labels: Json = {}) => ({ 'kubernetes.io/metadata.name': name, ...labels });
    expect(matches(webhook.namespaceSelector, ns('salon', { 'sekisho.io/inject': 'enabled' }))).toBe(true);
    expect(matches(webhook.namespaceSelector, ns('default'))).toBe(false);
    expect(matches(webhook.namespaceSelector, ns('kube-system', { 'sekisho.io/inject': 'enabled' }))).toBe(false);
    expect(matches(webhook.namespaceSelector, ns('sekisho-system', { 'sekisho.io/inject': 'enabled' }))).toBe(false);
    const [namespace, certificateName] = String(config?.metadata.annotations['cert-manager.io/inject-ca-from']).split(
      '/',
    );
    expect(namespace).toBe('sekisho-system');
    const certificate = named(objects(), 'Certificate').find((c) => c.metadata.name === certificateName) as Json;
    expect(certificate.spec.dnsNames).toContain('sekisho-injector.sekisho-system.svc');
    const injector = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-injector') as Json;
    expect(injector.spec.template.spec.volumes).toContainEqual({
      name: 'webhook-tls',
      secret: { secretName: certificate.spec.secretName },
    });
    const service = named(objects(), 'Service').find((s) => s.metadata.name === 'sekisho-injector') as Json;
    expect(service.spec.ports.find((p: Json) => p.port === 443)?.targetPort).toBe('webhook');
  });

  it('scrapes every component and the ingress Envoy with a ServiceMonitor on a named Service port', () => {
    const monitors = named(objects(), 'ServiceMonitor');
    const services = named(objects(), 'Service');
    const scraped = new Set<string>();
    for (const m of monitors) {
      const selected = services.filter((s) => matches(m.spec.selector, s.metadata.labels ?? {}));
      expect(selected.map(id), id(m)).toHaveLength(1);
      for (const e of m.spec.endpoints)
        expect(
          selected[0]?.spec.ports.map((p: Json) => p.name),
          id(m),
        ).toContain(e.port);
      scraped.add(selected[0]?.metadata.name);
    }
    expect([...scraped].sort()).toEqual([
      'sekisho-control-plane',
      'sekisho-ext-authz',
      'sekisho-ingress-stats',
      'sekisho-injector',
      'sekisho-ratelimit',
      'sekisho-threat-detector',
    ]);
    const [sidecars] = named(objects(), 'PodMonitor');
    expect(sidecars?.spec.selector.matchLabels).toEqual({ [proxyLabel]: 'sidecar' });
    // The port the injector names on every sidecar.
    expect(sidecars?.spec.podMetricsEndpoints[0].port).toBe('sekisho-health');
  });

  it("allows the sidecars' inbound port the injector is configured with", () => {
    const injector = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-injector') as Json;
    const env = Object.fromEntries(injector.spec.template.spec.containers[0].env.map((e: Json) => [e.name, e.value]));
    const settings = injectorConfig.parse(env);
    const ingress = named(objects(), 'NetworkPolicy').find((p) => p.metadata.name === 'sekisho-ingress') as Json;
    const toMesh = ingress.spec.egress.find(
      (r: Json) => r.to?.[0]?.namespaceSelector?.matchLabels?.[namespaceLabel] === 'enabled',
    );
    expect(toMesh.ports).toEqual([{ protocol: 'TCP', port: settings.INJECTOR_INBOUND_PORT }]);
    // The control plane the sidecars are sent to is the control plane's Service.
    expect(settings.INJECTOR_XDS_ADDRESS).toBe('sekisho-control-plane.sekisho-system.svc.cluster.local:18000');
    expect(settings.INJECTOR_SYSTEM_NAMESPACE).toBe('sekisho-system');
  });

  it('alerts on the SLOs with incident levels P0/P1/P2 and a runbook per alert', async () => {
    const rules = named(objects(), 'PrometheusRule').flatMap((r) => r.spec.groups.flatMap((g: Json) => g.rules));
    const alerts = rules.filter((r: Json) => r.alert);
    const runbooks = (await readdir(join(repoRoot, 'k8s', 'runbooks'))).filter(
      (f) => f.endsWith('.md') && f !== 'README.md',
    );
    for (const a of alerts) {
      expect(a.labels.incident_level, a.alert).toMatch(/^P[012]$/);
      expect(a.labels.severity, a.alert).toMatch(/^(critical|warning)$/);
      expect(a.annotations.runbook_url, a.alert).toBe(`k8s/runbooks/${a.alert}.md`);
      const text = await readFile(join(repoRoot, a.annotations.runbook_url), 'utf8');
      expect(text, a.alert).toContain(`# ${a.alert}`);
      expect(text, a.alert).toContain(a.labels.incident_level);
    }
    expect(runbooks.sort()).toEqual(alerts.map((a: Json) => `${a.alert}.md`).sort());
    const byName = Object.fromEntries(alerts.map((a: Json) => [a.alert, a]));
    // The reference's three SLOs, with their targets.
    expect(byName.SekishoAvailabilitySLOMissed.expr).toContain('< 0.999');
    expect(byName.SekishoLatencyP95High.expr).toContain('> 200');
    expect(byName.SekishoErrorRateHigh.expr).toContain('> 0.01');
    expect(byName.SekishoIngressDown.labels.incident_level).toBe('P0');
    const recorded = new Set(rules.filter((r: Json) => r.record).map((r: Json) => r.record));
    for (const a of alerts)
      for (const name of String(a.expr).match(/sekisho:[a-z0-9_:]+/g) ?? [])
        expect(recorded.has(name), `${a.alert}: ${name}`).toBe(true);
    // The dashboard uses only recording rules that exist.
    const dashboard = named(objects(), 'ConfigMap').find(
      (c) => c.metadata.name === 'sekisho-grafana-dashboard',
    ) as Json;
    const json = JSON.parse(dashboard.data['sekisho-dashboard.json']);
    expect(json.panels.length).toBeGreaterThan(10);
    for (const name of JSON.stringify(json).match(/sekisho:[a-z0-9_:]+/g) ?? [])
      expect(recorded.has(name), name).toBe(true);
  });

  it('lets exactly the intended traffic through the NetworkPolicies', () => {
    const policies = named(objects(), 'NetworkPolicy');
    const pod = (name: string, namespace: string, labels: Json, nsLabels: Json = {}) => ({
      name,
      namespace,
      labels,
      nsLabels: { 'kubernetes.io/metadata.name': namespace, ...nsLabels },
    });
    const system = (app: string) => {
      const w = workloads(objects()).find((x) => x.metadata.name === `sekisho-${app}`);
      return w ? [pod(app, 'sekisho-system', w.spec.template.metadata.labels)] : [];
    };
    type Actor = ReturnType<typeof pod> | { name: string; ip: string };
    const actors: Actor[] = [
      ...['ingress', 'control-plane', 'ext-authz', 'ratelimit', 'threat-detector', 'injector', 'redis'].flatMap(system),
      pod('mesh-pod', 'salon', { 'app.kubernetes.io/name': 'customer' }, { 'sekisho.io/inject': 'enabled' }),
      pod('other-pod', 'default', { app: 'x' }),
      pod('prometheus', 'monitoring', { 'app.kubernetes.io/name': 'prometheus' }),
      pod('kube-dns', 'kube-system', { 'k8s-app': 'kube-dns' }),
      { name: 'internet', ip: '203.0.113.7' },
      { name: 'api-server', ip: '172.20.0.1' },
      { name: 'external-redis', ip: '10.20.0.5' },
    ];
    const ports = [
      'TCP/53',
      'UDP/53',
      ...[443, 6379, 6380, 26379, 8080, 8443, 9001, 9002, 9003, 9101, 9102, 9103, 9443, 9902, 15006, 18000, 18001].map(
        (p) => `TCP/${p}`,
      ),
    ];
    const ipIn = (ip: string, cidr: string) => {
      const [base, bits] = cidr.split('/');
      const n = (a: string) => a.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
      const mask = Number(bits) === 0 ? 0 : 2 ** 32 - 2 ** (32 - Number(bits));
      return (n(ip) & mask) >>> 0 === (n(base as string) & mask) >>> 0;
    };
    const peerMatches = (peer: Json, policyNs: string, other: Actor) => {
      if (peer.ipBlock)
        return (
          'ip' in other &&
          ipIn(other.ip, peer.ipBlock.cidr) &&
          !(peer.ipBlock.except ?? []).some((c: string) => ipIn(other.ip, c))
        );
      if ('ip' in other) return false;
      if (peer.namespaceSelector && !matches(peer.namespaceSelector, other.nsLabels)) return false;
      if (!peer.namespaceSelector && other.namespace !== policyNs) return false;
      return !peer.podSelector || matches(peer.podSelector, other.labels);
    };
    const portMatches = (rulePorts: Json[] | undefined, port: string) =>
      !rulePorts || rulePorts.some((p) => `${p.protocol ?? 'TCP'}/${p.port}` === port);
    // Policies exist only in sekisho-system; traffic of other namespaces is theirs to police.
    const side = (self: Actor, other: Actor, port: string, direction: 'Ingress' | 'Egress') => {
      if ('ip' in self || self.namespace !== 'sekisho-system') return true;
      const selecting = policies.filter(
        (p) => matches(p.spec.podSelector, self.labels) && p.spec.policyTypes.includes(direction),
      );
      if (!selecting.length) return true;
      const key = direction === 'Ingress' ? 'ingress' : 'egress';
      const peers = direction === 'Ingress' ? 'from' : 'to';
      return selecting.some((p) =>
        (p.spec[key] ?? []).some(
          (rule: Json) =>
            portMatches(rule.ports, port) &&
            (!rule[peers] || rule[peers].some((peer: Json) => peerMatches(peer, p.metadata.namespace, other))),
        ),
      );
    };
    const allowed: string[] = [];
    for (const from of actors)
      for (const to of actors) {
        if (from === to) continue;
        const governed = [from, to].some((a) => !('ip' in a) && a.namespace === 'sekisho-system');
        if (!governed) continue;
        for (const port of ports)
          if (side(from, to, port, 'Egress') && side(to, from, port, 'Ingress'))
            allowed.push(`${from.name} -> ${to.name} ${port}`);
      }
    const fromAnywhere = (to: string, list: number[]) =>
      ['mesh-pod', 'other-pod', 'prometheus', 'kube-dns', 'internet', 'api-server', 'external-redis'].flatMap((from) =>
        list.map((p) => `${from} -> ${to} TCP/${p}`),
      );
    const dns = (from: string) => [`${from} -> kube-dns TCP/53`, `${from} -> kube-dns UDP/53`];
    const redisClients = ['ext-authz', 'ratelimit', 'threat-detector'];
    const redis =
      overlay === 'dev'
        ? redisClients.map((from) => `${from} -> redis TCP/6379`)
        : // The data nodes (6379, or 6380 for TLS) and the sentinels (26379).
          redisClients.flatMap((from) => [6379, 6380, 26379].map((port) => `${from} -> external-redis TCP/${port}`));
    const expected = [
      // Clients reach the ingress; the API server (from wherever it is) reaches the webhook.
      ...fromAnywhere('ingress', [8080, 8443]),
      ...fromAnywhere('injector', [9443]),
      // The ingress calls the control plane, the policy services and the mesh's sidecars.
      'ingress -> control-plane TCP/18000',
      'ingress -> ext-authz TCP/9001',
      'ingress -> ratelimit TCP/9002',
      'ingress -> mesh-pod TCP/15006',
      // The ingress streams its access log to the threat detector (sidecars do not: nothing
      // else reaches its gRPC port).
      'ingress -> threat-detector TCP/9003',
      // Sidecars of opted-in namespaces: ADS and the policy services.
      'mesh-pod -> control-plane TCP/18000',
      'mesh-pod -> ext-authz TCP/9001',
      'mesh-pod -> ratelimit TCP/9002',
      // The policy services: ADS, Redis, and (ext-authz) Google's keys over HTTPS; the threat
      // detector: Redis (in the list above) and no control plane (its rules come in the entries).
      'ext-authz -> control-plane TCP/18000',
      'ratelimit -> control-plane TCP/18000',
      'ext-authz -> internet TCP/443',
      // The threat detector's alert webhook (Slack or another public HTTPS endpoint).
      'threat-detector -> internet TCP/443',
      ...redis,
      // Prometheus scrapes every admin port.
      'prometheus -> ingress TCP/9902',
      'prometheus -> control-plane TCP/18001',
      'prometheus -> ext-authz TCP/9101',
      'prometheus -> ratelimit TCP/9102',
      'prometheus -> injector TCP/9103',
      'prometheus -> threat-detector TCP/9103',
      ...[
        'ingress',
        'control-plane',
        'ext-authz',
        'ratelimit',
        'threat-detector',
        'injector',
        ...(overlay === 'dev' ? ['redis'] : []),
      ].flatMap(dns),
    ];
    expect(allowed.sort()).toEqual(expected.sort());
  });

  it("alerts on the threat detector's failure modes, on metrics it exports", async () => {
    const alerts = named(objects(), 'PrometheusRule')
      .flatMap((r) => r.spec.groups.flatMap((g: Json) => g.rules))
      .filter((r: Json) => r.alert && String(r.expr).includes('job="sekisho-threat-detector"'));
    const byName = Object.fromEntries(alerts.map((a: Json) => [a.alert, a]));
    expect(Object.keys(byName).sort()).toEqual([
      'SekishoSecurityEventsSurge',
      'SekishoThreatAlertWebhookFailing',
      'SekishoThreatDetectionPaused',
      'SekishoThreatDetectorDown',
      'SekishoThreatFactsDropped',
    ]);
    const registry = createMetricsRegistry('threat-detector');
    createDetectorMetrics(registry, () => 0);
    createAlertMetrics(registry);
    const exported = new Set([...(await registry.getMetricsAsJSON()).map((m) => m.name), 'up']);
    for (const a of alerts) {
      const used = [...String(a.expr).matchAll(/([a-z_][a-z0-9_]*)\{job="sekisho-threat-detector"/g)].map((m) => m[1]);
      expect(used.length, a.alert).toBeGreaterThan(0);
      for (const name of used) expect(exported.has(name as string), `${a.alert}: ${name}`).toBe(true);
    }
    expect(byName.SekishoThreatDetectionPaused.expr).toContain('sekisho_threat_detection_paused');
    expect(byName.SekishoThreatFactsDropped.expr).toContain('sekisho_threat_facts_dropped_total');
    expect(byName.SekishoThreatAlertWebhookFailing.expr).toContain('result="failed"');
    expect(byName.SekishoSecurityEventsSurge.labels.category).toBe('security');
    // Detection down is a critical feature unavailable (as the rate-limit service down), not an outage.
    expect(byName.SekishoThreatDetectorDown.labels.incident_level).toBe('P1');
    expect(byName.SekishoThreatDetectionPaused.labels.incident_level).toBe('P1');
  });

  it("points the definition's policy services, the threat detector included, at their Services' gRPC ports", () => {
    const definition = parse(
      String(
        named(objects(), 'ConfigMap').find((c) => c.metadata.name === 'sekisho-gateway-definition')?.data[
          'gateway.yaml'
        ],
      ),
    );
    const services = new Map(named(objects(), 'Service').map((s) => [s.metadata.name, s]));
    const expected = {
      extAuthz: 'sekisho-ext-authz',
      rateLimit: 'sekisho-ratelimit',
      threatDetector: 'sekisho-threat-detector',
    };
    for (const [field, serviceName] of Object.entries(expected)) {
      const address = String(definition.policyServices[field]?.address);
      const [host, port] = address.split(':');
      expect(host, field).toBe(`${serviceName}.sekisho-system.svc.cluster.local`);
      const grpc = services.get(serviceName)?.spec.ports.find((p: Json) => p.name === 'grpc');
      expect(grpc?.port, field).toBe(Number(port));
      expect(grpc?.appProtocol, field).toBe('kubernetes.io/h2c');
    }
    // With threats the control plane adds the gRPC access log to the ingress's listeners.
    expect(definition.threats).toBeDefined();
    const detector = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-threat-detector') as Json;
    const env = Object.fromEntries(detector.spec.template.spec.containers[0].env.map((e: Json) => [e.name, e]));
    expect(env.THREAT_GRPC_PORT.value).toBe(String(services.get('sekisho-threat-detector')?.spec.ports[0].port));
    // The alert webhook is a secret (whoever has the URL can post to the channel): from an
    // optional Secret, so the detector starts without alerts when it does not exist.
    expect(env.THREAT_ALERT_WEBHOOK_URL.valueFrom).toEqual({
      secretKeyRef: { name: 'sekisho-threat-alert-webhook', key: 'url', optional: true },
    });
    // The GeoIP database only with the component (a missing file stops the detector's start).
    expect(env.THREAT_GEOIP_DATABASE).toBeUndefined();
  });

  it('gives ext-authz the Redis the definition needs it to count the per-user limits in', () => {
    const definition = parse(
      String(
        named(objects(), 'ConfigMap').find((c) => c.metadata.name === 'sekisho-gateway-definition')?.data[
          'gateway.yaml'
        ],
      ),
    );
    expect(definition.policyServices.rateLimit.perUserLimits).toBe('ext-authz');
    const extAuthz = named(objects(), 'Deployment').find((d) => d.metadata.name === 'sekisho-ext-authz') as Json;
    const env = extAuthz.spec.template.spec.containers[0].env.map((e: Json) => e.name);
    // Without it ext-authz refuses the policy (a NACK naming the variable).
    expect(env).toContain('EXT_AUTHZ_REDIS_URL');
  });

  it('serves a gateway definition that compiles', async () => {
    const definition = named(objects(), 'ConfigMap').find(
      (c) => c.metadata.name === 'sekisho-gateway-definition',
    ) as Json;
    // The certificate files are the mounted Secret in the cluster; the development pair here.
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-k8s-definition-'));
    try {
      const devTls = join(repoRoot, 'control-plane', 'examples', 'dev-tls');
      const text = String(definition.data['gateway.yaml'])
        .replaceAll('/etc/sekisho/tls/tls.crt', join(devTls, 'localhost.crt'))
        .replaceAll('/etc/sekisho/tls/tls.key', join(devTls, 'localhost.key'));
      await writeFile(join(dir, 'gateway.yaml'), text);
      const result = await compileDefinitionFile(join(dir, 'gateway.yaml'));
      expect(result.ok ? [] : result.errors).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('k8s/components/threat-detector-geoip', () => {
  it("adds the City database from a read-only volume the detector's variable points into, to either overlay", async () => {
    const bin = findKustomize();
    if (!bin) throw new Error(kustomizeInstallHint);
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-k8s-geoip-'));
    try {
      for (const overlay of overlays) {
        // An overlay of the overlay, as a platform team writes it (kustomize wants relative paths).
        const k8s = relative(dir, join(repoRoot, 'k8s'));
        await writeFile(
          join(dir, 'kustomization.yaml'),
          stringify({
            apiVersion: 'kustomize.config.k8s.io/v1beta1',
            kind: 'Kustomization',
            resources: [`${k8s}/overlays/${overlay}`],
            components: [`${k8s}/components/threat-detector-geoip`],
          }),
        );
        const objects = parseAllDocuments(await kustomizeBuild(bin, dir)).map((d) => d.toJSON() as Json);
        const problems = objects.flatMap((o) => {
          const found = validateObject(o);
          return found.length ? [describeProblems(id(o), found)] : [];
        });
        expect(problems.join('\n')).toBe('');
        const pod = (named(objects, 'Deployment').find((d) => d.metadata.name === 'sekisho-threat-detector') as Json)
          .spec.template.spec;
        expect(podSecurityRestrictedProblems(pod), overlay).toEqual([]);
        const container = pod.containers[0];
        const database = container.env.find((e: Json) => e.name === 'THREAT_GEOIP_DATABASE')?.value as string;
        // A City database: the detector refuses a Country one (it has no coordinates).
        expect(database, overlay).toMatch(/-City\.mmdb$/);
        const mount = container.volumeMounts.find((m: Json) => database.startsWith(`${m.mountPath}/`));
        expect(mount, overlay).toMatchObject({ readOnly: true });
        expect(mount.subPath).toBeUndefined();
        expect(pod.volumes.find((v: Json) => v.name === mount.name)).toEqual({
          name: mount.name,
          persistentVolumeClaim: { claimName: 'sekisho-threat-geoip', readOnly: true },
        });
        // The overlay's own settings stay (Redis, the webhook).
        const names = container.env.map((e: Json) => e.name);
        expect(names).toContain('THREAT_REDIS_URL');
        expect(names).toContain('THREAT_ALERT_WEBHOOK_URL');
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('k8s/mesh-identity (what csi-driver-spiffe needs)', () => {
  let objects: Json[] = [];
  let values: Json = {};
  beforeAll(async () => {
    const bin = findKustomize();
    if (!bin) throw new Error(kustomizeInstallHint);
    objects = parseAllDocuments(await kustomizeBuild(bin, join(repoRoot, 'k8s', 'mesh-identity'))).map(
      (d) => d.toJSON() as Json,
    );
    values = parse(await readFile(join(repoRoot, 'k8s', 'mesh-identity', 'csi-driver-spiffe-values.yaml'), 'utf8'));
  });

  it('is valid, cluster-scoped but for one RoleBinding, and lets mesh pods only create CertificateRequests', () => {
    const problems = objects.flatMap((o) => {
      const found = validateObject(o);
      return found.length ? [describeProblems(id(o), found)] : [];
    });
    expect(problems.join('\n')).toBe('');
    expect(objects.map(id).sort()).toEqual([
      'CertificateRequestPolicy/sekisho-control-channel-ca',
      'CertificateRequestPolicy/sekisho-ingress-tls',
      'CertificateRequestPolicy/sekisho-ingress-tls-selfsigned',
      'CertificateRequestPolicy/sekisho-injector-ca',
      'CertificateRequestPolicy/sekisho-mesh-root',
      'CertificateRequestPolicy/sekisho-selfsigned',
      'ClusterIssuer/sekisho-mesh-spiffe',
      'ClusterRole/sekisho-certificate-request-policies',
      'ClusterRole/sekisho-spiffe-certificate-requester',
      'RoleBinding/sekisho-certificate-request-policies',
    ]);
    for (const o of objects)
      expect(o.metadata.namespace, id(o)).toBe(o.kind === 'RoleBinding' ? 'sekisho-system' : undefined);
    const role = named(objects, 'ClusterRole').find((r) => r.metadata.name === 'sekisho-spiffe-certificate-requester');
    expect(role?.rules).toEqual([
      { apiGroups: ['cert-manager.io'], resources: ['certificaterequests'], verbs: ['create'] },
    ]);
  });

  it('signs with an intermediate under the mesh root, for the trust domain the control plane and injector use', () => {
    const base = rendered.get('prod') ?? [];
    const [issuer] = named(objects, 'ClusterIssuer');
    const signer = named(base, 'Certificate').find((c) => c.spec.secretName === issuer?.spec.ca.secretName) as Json;
    expect(signer.spec.isCA).toBe(true);
    const meshCa = named(base, 'Certificate').find((c) => c.spec.secretName === 'sekisho-mesh-ca') as Json;
    // The same root as the control plane's mesh CA: its Secret's ca.crt (the bundle) is that root.
    expect(signer.spec.issuerRef).toEqual(meshCa.spec.issuerRef);
    expect(values.app.issuer).toEqual({ name: issuer?.metadata.name, kind: 'ClusterIssuer', group: 'cert-manager.io' });
    const envOf = (name: string) =>
      Object.fromEntries(
        (
          named(base, 'Deployment').find((d) => d.metadata.name === name)?.spec.template.spec.containers[0].env ?? []
        ).map((e: Json) => [e.name, e.value]),
      );
    const controlPlane = controlPlaneConfig.parse({ CONTROL_PLANE_DEFINITION: 'x', ...envOf('sekisho-control-plane') });
    const injector = injectorConfig.parse(envOf('sekisho-injector'));
    expect(values.app.trustDomain).toBe(controlPlane.CONTROL_PLANE_MESH_TRUST_DOMAIN);
    expect(values.app.trustDomain).toBe(injector.INJECTOR_TRUST_DOMAIN);
    // The files the injector's bootstrap reads.
    expect(values.app.driver.volumeFileName).toMatchObject({ cert: 'tls.crt', key: 'tls.key' });
    expect(values.app.certificateRequestDuration).toBe('1h');
  });

  it('has a per-namespace RoleBinding example letting only that namespace request', async () => {
    const [binding] = parseAllDocuments(
      await readFile(join(repoRoot, 'k8s', 'examples', 'mesh-namespace-spiffe.yaml'), 'utf8'),
    ).map((d) => d.toJSON() as Json);
    expect(describeProblems('RoleBinding', validateObject(binding as Json))).toBe('');
    expect(binding?.roleRef).toMatchObject({ kind: 'ClusterRole', name: 'sekisho-spiffe-certificate-requester' });
    expect(binding?.subjects).toEqual([
      {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Group',
        name: `system:serviceaccounts:${binding?.metadata.namespace}`,
      },
    ]);
  });
});

describe("certificate approval (approver-policy beside csi-driver-spiffe's approver)", () => {
  const policyFile = join(repoRoot, 'k8s', 'mesh-identity');
  let meshIdentity: Json[] = [];
  let approverPolicyValues: Json = {};
  let spiffeValues: Json = {};
  let meshNamespaceBinding: Json = {};
  const policies = () => named(meshIdentity, 'CertificateRequestPolicy');
  // Every RBAC object a cluster running Sekisho has from Sekisho: the overlay's, mesh-identity's,
  // and the per-namespace RoleBinding of an opted-in namespace.
  const rbacOf = (overlay: string) => [...(rendered.get(overlay) ?? []), ...meshIdentity, meshNamespaceBinding];
  const certManager: Requester = {
    username: 'system:serviceaccount:cert-manager:cert-manager',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:cert-manager', 'system:authenticated'],
  };
  // A compromised pod of the opted-in namespace salon: it may create CertificateRequests there.
  const meshPod: Requester = {
    username: 'system:serviceaccount:salon:customer',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:salon', 'system:authenticated'],
  };
  const salonLabels = { [namespaceLabel]: 'enabled', 'kubernetes.io/metadata.name': 'salon' };
  const spiffeIssuer = { name: 'sekisho-mesh-spiffe', kind: 'ClusterIssuer', group: 'cert-manager.io' };

  beforeAll(async () => {
    const bin = findKustomize();
    if (!bin) throw new Error(kustomizeInstallHint);
    meshIdentity = parseAllDocuments(await kustomizeBuild(bin, policyFile)).map((d) => d.toJSON() as Json);
    approverPolicyValues = parse(await readFile(join(policyFile, 'approver-policy-values.yaml'), 'utf8'));
    spiffeValues = parse(await readFile(join(policyFile, 'csi-driver-spiffe-values.yaml'), 'utf8'));
    meshNamespaceBinding = parse(
      await readFile(join(repoRoot, 'k8s', 'examples', 'mesh-namespace-spiffe.yaml'), 'utf8'),
    ) as Json;
  });

  it.each(overlays)(
    'approves every Certificate of the %s overlay by exactly one policy, bound to cert-manager’s controller',
    (overlay) => {
      const certificates = named(rendered.get(overlay) ?? [], 'Certificate');
      expect(certificates.length).toBeGreaterThanOrEqual(11);
      const verdicts = certificates.map((c) => {
        const { allowing } = review(policies(), rbacOf(overlay), requestOf(c, 'sekisho-system'), certManager);
        return `${id(c)}: ${allowing.join(', ') || 'no policy'}`;
      });
      expect(verdicts.filter((v) => v.endsWith('no policy') || v.includes(','))).toEqual([]);
      // Every policy approves something: none is left over from a removed Certificate.
      const used = new Set(
        [...overlays].flatMap((o) =>
          named(rendered.get(o) ?? [], 'Certificate').flatMap(
            (c) => review(policies(), rbacOf(o), requestOf(c, 'sekisho-system'), certManager).allowing,
          ),
        ),
      );
      expect([...used].sort()).toEqual(
        policies()
          .map((p) => p.metadata.name)
          .sort(),
      );
    },
  );

  it('allows exactly what the Certificates request: any other name, usage, CA bit, lifetime or key is denied', () => {
    const certificate = (name: string) =>
      named(rendered.get('prod') ?? [], 'Certificate').find((c) => c.metadata.name === name) as Json;
    const denied = (request: Request) => review(policies(), rbacOf('prod'), request, certManager).allowing.length === 0;
    const ingressXds = requestOf(certificate('sekisho-ingress-xds'), 'sekisho-system');
    expect(denied(ingressXds)).toBe(false);
    const server = requestOf(certificate('sekisho-control-plane-tls'), 'sekisho-system');
    const injector = requestOf(certificate('sekisho-injector-tls'), 'sekisho-system');
    const meshCa = requestOf(certificate('sekisho-mesh-ca'), 'sekisho-system');
    const ingressTls = requestOf(certificate('sekisho-ingress-tls'), 'sekisho-system');
    for (const [what, request] of [
      ['a sidecar identity from the channel CA', { ...ingressXds, uris: ['spiffe://sekisho.local/sidecar/customer'] }],
      ['a mesh identity from the channel CA', { ...ingressXds, uris: ['spiffe://cluster.local/ns/salon/sa/customer'] }],
      ['another common name', { ...ingressXds, commonName: 'admin' }],
      ['an extra DNS name on the server', { ...server, dnsNames: [...(server.dnsNames ?? []), 'evil.example'] }],
      ['a CA from the channel CA', { ...ingressXds, isCA: true }],
      ['a CA from the webhook CA', { ...injector, isCA: true }],
      ['code signing', { ...injector, usages: ['code signing'] }],
      ['a 10-year leaf', { ...ingressXds, duration: '87600h' }],
      ['no duration', { ...ingressXds, duration: undefined }],
      ['an RSA key', { ...injector, key: { algorithm: 'RSA', size: 2048 } }],
      ['a third mesh intermediate', { ...meshCa, commonName: 'sekisho-mesh-evil' }],
      ['a DNS name on a mesh intermediate', { ...meshCa, dnsNames: ['api.salon.example'] }],
      ['another host name from the ACME issuer', { ...ingressTls, dnsNames: ['admin.salon.example'] }],
      ['the ingress name in a URI too', { ...ingressTls, uris: ['spiffe://sekisho.local/ingress'] }],
      ['the ingress names from another namespace', { ...ingressTls, namespace: 'salon' }],
    ] as Array<[string, Request]>)
      expect(denied(request), what).toBe(true);
  });

  it('leaves the SPIFFE ClusterIssuer to csi-driver-spiffe’s approver alone: no policy selects it', () => {
    for (const namespace of ['salon', 'sekisho-system', 'cert-manager'])
      for (const p of policies())
        expect(
          selectorMatches(
            p,
            { namespace, issuerRef: spiffeIssuer, key: { algorithm: 'ECDSA', size: 256 } },
            salonLabels,
          ),
          p.metadata.name,
        ).toBe(false);
  });

  it('binds the policies to cert-manager’s controller only, in sekisho-system only', () => {
    const names = policies().map((p) => p.metadata.name);
    for (const overlay of overlays) {
      const rbac = rbacOf(overlay);
      const grantsUse = (r: Json) =>
        r.apiGroups?.some((g: string) => ['policy.cert-manager.io', '*'].includes(g)) &&
        r.verbs?.some((v: string) => ['use', '*'].includes(v));
      const roles = rbac.filter((o) => /Role$/.test(o.kind) && (o.rules ?? []).some(grantsUse));
      expect(roles.map(id)).toEqual(['ClusterRole/sekisho-certificate-request-policies']);
      const [rule, ...more] = roles[0]?.rules ?? [];
      expect(more).toEqual([]);
      expect({ ...rule, resourceNames: [...rule.resourceNames].sort() }).toEqual({
        apiGroups: ['policy.cert-manager.io'],
        resources: ['certificaterequestpolicies'],
        verbs: ['use'],
        resourceNames: [...names].sort(),
      });
      const bindings = rbac.filter((b) => /RoleBinding$/.test(b.kind) && b.roleRef.name === roles[0]?.metadata.name);
      expect(bindings.map((b) => [id(b), b.metadata.namespace, b.subjects])).toEqual([
        [
          'RoleBinding/sekisho-certificate-request-policies',
          'sekisho-system',
          [{ kind: 'ServiceAccount', name: 'cert-manager', namespace: 'cert-manager' }],
        ],
      ]);
      for (const name of names)
        for (const [who, namespace] of [
          [meshPod, 'salon'],
          [meshPod, 'sekisho-system'],
          [certManager, 'salon'],
        ] as Array<[Requester, string]>)
          expect(
            rbacAllows(rbac, who, {
              apiGroup: 'policy.cert-manager.io',
              resource: 'certificaterequestpolicies',
              verb: 'use',
              name,
              namespace,
            }),
            `${who.username} in ${namespace}: ${name}`,
          ).toBe(false);
    }
  });

  it('approves no request a compromised mesh pod could forge against another issuer', () => {
    const base = rendered.get('prod') ?? [];
    const fromCertificate = (name: string) =>
      requestOf(named(base, 'Certificate').find((c) => c.metadata.name === name) as Json, 'salon');
    const forged: Array<[string, Request]> = [
      ['the ingress’s control channel identity', { ...fromCertificate('sekisho-ingress-xds'), namespace: 'salon' }],
      ['the control plane’s server identity', { ...fromCertificate('sekisho-control-plane-tls'), namespace: 'salon' }],
      ['the ingress’s public host name', { ...fromCertificate('sekisho-ingress-tls'), namespace: 'salon' }],
      ['a mesh intermediate', { ...fromCertificate('sekisho-mesh-spiffe-ca'), namespace: 'salon' }],
      ['a root from the bootstrap issuer', { ...fromCertificate('sekisho-control-channel-ca'), namespace: 'salon' }],
      ['the webhook’s serving name', { ...fromCertificate('sekisho-injector-tls'), namespace: 'salon' }],
    ];
    for (const [what, request] of forged) {
      // The same request from cert-manager's controller in sekisho-system is approved: what denies
      // the pod is that nothing is bound to it, not the request's shape.
      expect(
        review(policies(), rbacOf('prod'), { ...request, namespace: 'sekisho-system' }, certManager).allowing,
        what,
      ).toHaveLength(1);
      for (const namespace of ['salon', 'sekisho-system'])
        expect(review(policies(), rbacOf('prod'), { ...request, namespace }, meshPod, salonLabels), what).toEqual({
          considered: [],
          allowing: [],
        });
    }
    // What the pod may create at all: CertificateRequests in its own namespace, nothing else.
    expect(
      rbacAllows(rbacOf('prod'), meshPod, {
        apiGroup: 'cert-manager.io',
        resource: 'certificaterequests',
        verb: 'create',
        name: '',
        namespace: 'salon',
      }),
    ).toBe(true);
    expect(
      rbacAllows(rbacOf('prod'), meshPod, {
        apiGroup: 'cert-manager.io',
        resource: 'certificaterequests',
        verb: 'create',
        name: '',
        namespace: 'sekisho-system',
      }),
    ).toBe(false);
  });

  it('gives each approver only its own signers: approver-policy the policies’ issuers, the driver its ClusterIssuer', () => {
    const policySigners = policies().map((p) => {
      const ref = p.spec.selector.issuerRef;
      const namespaces: string[] = p.spec.selector.namespace?.matchNames ?? [];
      // A namespaced issuer's signer names its namespace: exactly one, without wildcards.
      if ((ref.kind ?? 'Issuer') === 'Issuer') expect(namespaces, p.metadata.name).toHaveLength(1);
      for (const field of [ref.name, ref.kind, ref.group, ...namespaces])
        expect(field, `${p.metadata.name}: an exact selector`).toMatch(/^[^*]+$/);
      return signerName(ref, namespaces[0] as string);
    });
    expect([...approverPolicyValues.app.approveSignerNames].sort()).toEqual([...new Set(policySigners)].sort());
    const spiffeSigner = signerName(spiffeIssuer, '');
    expect(spiffeValues.app.issuer).toEqual(spiffeIssuer);
    expect(spiffeValues.app.approver).toMatchObject({ autoApproveNonSPIFFE: false, signerName: spiffeSigner });
    expect(approverPolicyValues.app.approveSignerNames).not.toContain(spiffeSigner);
    // Every issuer a Sekisho Certificate names is one of approver-policy's signers.
    for (const overlay of overlays)
      for (const c of named(rendered.get(overlay) ?? [], 'Certificate'))
        expect(approverPolicyValues.app.approveSignerNames, id(c)).toContain(
          signerName(c.spec.issuerRef, c.metadata.namespace),
        );
  });
});

describe('k8s/examples/sidecar-xds-certificate-secret-mode.yaml', () => {
  it('is valid and issues the identity and Secret the injector (Secret mode) and the control plane expect', async () => {
    const objects = parseAllDocuments(
      await readFile(join(repoRoot, 'k8s', 'examples', 'sidecar-xds-certificate-secret-mode.yaml'), 'utf8'),
    ).map((d) => d.toJSON() as Json);
    const problems = objects.flatMap((o) => {
      const found = validateObject(o);
      return found.length ? [describeProblems(id(o), found)] : [];
    });
    expect(problems.join('\n')).toBe('');
    const [issuer] = named(objects, 'ClusterIssuer');
    const [certificate] = named(objects, 'Certificate');
    // Signs with the channel CA of the base; the Secret is the one the injector mounts.
    const base = rendered.get('dev') ?? [];
    expect(
      named(base, 'Certificate').some((c) => c.spec.isCA && c.spec.secretName === issuer?.spec.ca.secretName),
    ).toBe(true);
    expect(certificate?.spec.issuerRef).toMatchObject({ kind: 'ClusterIssuer', name: issuer?.metadata.name });
    expect(certificate?.spec.secretName).toBe(proxyXdsSecretName('customer'));
    expect(certificate?.spec.uris).toEqual(['spiffe://sekisho.local/sidecar/customer']);
    expect(certificate?.spec.usages).toContain('client auth');
  });

  it('approves only sidecar identities from its ClusterIssuer, in opted-in namespaces, for cert-manager’s controller', async () => {
    const objects = parseAllDocuments(
      await readFile(join(repoRoot, 'k8s', 'examples', 'sidecar-xds-certificate-secret-mode.yaml'), 'utf8'),
    ).map((d) => d.toJSON() as Json);
    const policies = named(objects, 'CertificateRequestPolicy');
    const [certificate] = named(objects, 'Certificate');
    const certManager: Requester = { username: 'system:serviceaccount:cert-manager:cert-manager', groups: [] };
    const optedIn = { [namespaceLabel]: 'enabled' };
    const request = requestOf(certificate as Json, 'salon');
    expect(review(policies, objects, request, certManager, optedIn)).toEqual({
      considered: ['sekisho-control-channel-sidecars'],
      allowing: ['sekisho-control-channel-sidecars'],
    });
    const allowedFor = (r: Request, labels: Record<string, string> = optedIn, who = certManager) =>
      review(policies, objects, r, who, labels).allowing;
    expect(allowedFor(request, {}), 'a namespace not opted in').toEqual([]);
    expect(
      allowedFor(request, optedIn, {
        username: 'system:serviceaccount:salon:customer',
        groups: ['system:serviceaccounts', 'system:serviceaccounts:salon'],
      }),
      'a pod of the namespace',
    ).toEqual([]);
    for (const uri of [
      'spiffe://sekisho.local/ingress',
      'spiffe://sekisho.local/control-plane',
      'spiffe://sekisho.local/sidecar/a/../../ingress',
      'spiffe://cluster.local/ns/salon/sa/customer',
    ])
      expect(allowedFor({ ...request, uris: [uri] }), uri).toEqual([]);
    expect(allowedFor({ ...request, commonName: 'sekisho-ingress' })).toEqual([]);
    expect(allowedFor({ ...request, usages: ['server auth'] })).toEqual([]);
    expect(allowedFor({ ...request, isCA: true })).toEqual([]);
    // Bound to cert-manager's controller only.
    const bindings = objects.filter((o) => /RoleBinding$/.test(o.kind));
    expect(bindings.map((b) => b.subjects)).toEqual([
      [{ kind: 'ServiceAccount', name: 'cert-manager', namespace: 'cert-manager' }],
    ]);
  });
});

describe('the ingress Envoy bootstrap', () => {
  it('is envoy/bootstrap.yaml rendered for the cluster plus the stats listener (UPDATE_GOLDEN=1 rewrites it)', async () => {
    const expected = await expectedIngressBootstrap();
    if (process.env.UPDATE_GOLDEN) {
      const current = await readFile(ingressBootstrapFile, 'utf8');
      const header = current.slice(0, current.indexOf('\nnode:') + 1);
      await writeFile(ingressBootstrapFile, header + stringify(expected, { lineWidth: 0 }));
    }
    expect(parse(await readFile(ingressBootstrapFile, 'utf8'))).toEqual(expected);
    for (const [name, content] of Object.entries(expectedIngressSdsFiles())) {
      const file = join(dirname(ingressBootstrapFile), name);
      if (process.env.UPDATE_GOLDEN)
        await writeFile(
          file,
          `# The ingress Envoy's control channel ${name.includes('ca') ? 'CA' : 'client certificate'} over file-based SDS, watching the mounted\n` +
            `# Secret sekisho-ingress-xds. Generated by test/k8s-manifests.e2e.test.ts (UPDATE_GOLDEN=1).\n${stringify(content, { lineWidth: 0 })}`,
        );
      expect(parse(await readFile(file, 'utf8')), name).toEqual(content);
    }
  });

  it('passes envoy --mode validate (with certificate files where the Secret is mounted)', async () => {
    // Envoy reads the control channel files while validating: the ones a CA of the run issues
    // stand in for the mounted sekisho-ingress-xds Secret (same names: ca.crt, tls.crt, tls.key).
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-k8s-ingress-xds-'));
    try {
      const certs = await createControlChannelCertificates(dir, { clients: ['ingress'] });
      await copyFile(certs.caFile, join(dir, 'ca.crt'));
      await copyFile(certs.clients.ingress?.certFile as string, join(dir, 'tls.crt'));
      await copyFile(certs.clients.ingress?.keyFile as string, join(dir, 'tls.key'));
      // The SDS files as the ConfigMap mounts them, pointing at the stand-in Secret directory.
      for (const name of Object.keys(expectedIngressSdsFiles()))
        await writeFile(
          join(dir, name),
          (await readFile(join(dirname(ingressBootstrapFile), name), 'utf8')).replaceAll(ingressXdsTlsDir, dir),
        );
      const text = await readFile(ingressBootstrapFile, 'utf8');
      expect(text).toContain(`${ingressSdsDir}/xds-client-sds.yaml`);
      const result = await validateEnvoyConfig(text.replaceAll(`${ingressSdsDir}/`, `${dir}/`));
      expect(result.ok, result.output).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is what the ingress Deployment mounts and runs', () => {
    const objects = rendered.get('dev') ?? [];
    const cm = named(objects, 'ConfigMap').find((c) => c.metadata.name.startsWith('sekisho-ingress-bootstrap')) as Json;
    expect(existsSync(ingressBootstrapFile)).toBe(true);
    const d = named(objects, 'Deployment').find((x) => x.metadata.name === 'sekisho-ingress') as Json;
    expect(d.spec.template.spec.volumes).toContainEqual({ name: 'bootstrap', configMap: { name: cm.metadata.name } });
    expect(d.spec.template.spec.containers[0].args.slice(0, 2)).toEqual(['-c', '/etc/envoy/bootstrap.yaml']);
  });
});
