// The views that follow a definition's mesh: one sidecar:<service> view per mesh service, the
// workload Secrets added from a WorkloadSecrets source, a removed service's view served empty,
// and a mesh refused (field mesh) when the control plane has no mesh CA.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMeshPki } from '../../../test/mesh-pki';
import { compileDefinition } from '../definition/load';
import { MeshCa, type Schedule } from '../mesh/ca';
import { meshSecretNames } from '../mesh/contract';
import { createTestCa } from '../mesh/test-ca';
import { SnapshotCache } from './cache';
import { captureLogger } from './test-helpers';
import { typeUrls } from './type-urls';
import { createViews, DefinitionRefusedError, gatewayViews, sidecarViews } from './views';

const meshYaml = readFileSync(resolve(import.meta.dirname, '../translate/testdata/in/mesh.yaml'), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'sekisho-mesh-views-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const secrets = createMeshPki(dir).workloadSecrets();

function compiled(definition: unknown) {
  const result = compileDefinition(definition);
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result;
}
const names = (resources: Map<string, { name: string }[]> | undefined, type: string) =>
  (resources?.get(type) ?? []).map((resource) => resource.name);

describe('sidecar views', () => {
  it('compiles one view per mesh service, each with its listeners and its workload Secrets', () => {
    const views = createViews(gatewayViews(secrets), sidecarViews(secrets));
    const byView = views.compile(compiled(parse(meshYaml)));
    expect(views.names).toEqual(['ingress', 'ext-authz', 'ratelimit', 'sidecar:appointment', 'sidecar:customer']);
    const customer = byView.get('sidecar:customer');
    expect(names(customer, typeUrls.listener)).toEqual(['sidecar_inbound', 'sidecar_outbound']);
    // customer may call appointment; appointment calls nobody, but its own routes need the
    // policy services (ext-authz; the rate-limit service for their limits).
    expect(names(customer, typeUrls.cluster)).toEqual(['sidecar_app', 'svc_appointment']);
    expect(names(byView.get('sidecar:appointment'), typeUrls.cluster)).toEqual([
      'sekisho_ext_authz',
      'sekisho_ratelimit',
      'sidecar_app',
    ]);
    expect(names(customer, typeUrls.secret)).toEqual([meshSecretNames.certificate, meshSecretNames.trustBundle]);
    // The ingress presents its own workload certificate to the mesh services it reaches.
    expect(names(byView.get('ingress'), typeUrls.secret)).toEqual([
      meshSecretNames.certificate,
      meshSecretNames.trustBundle,
    ]);
    expect(byView.get('sidecar:customer')?.has(typeUrls.authzPolicy)).toBe(false);
  });

  it('classifies a sidecar by its node cluster once the definition has its service', () => {
    const views = createViews(gatewayViews(secrets), sidecarViews(secrets));
    const sidecar = Node.fromPartial({ id: 'customer-1.salon', cluster: 'sidecar:customer' });
    expect(views.classify(sidecar)).toBeUndefined();
    views.compile(compiled(parse(meshYaml)));
    expect(views.classify(sidecar)).toBe('sidecar:customer');
    expect(views.classify(Node.fromPartial({ cluster: 'sidecar:billing' }))).toBeUndefined();
    expect(views.classify(Node.fromPartial({ cluster: 'x', metadata: { 'sekisho.view': 'sidecar:customer' } }))).toBe(
      'sidecar:customer',
    );
  });

  it('serves a service that left the mesh nothing, and keeps its view', () => {
    const views = createViews(gatewayViews(secrets), sidecarViews(secrets));
    const cache = new SnapshotCache();
    cache.setSnapshots(views.compile(compiled(parse(meshYaml))));
    const definition = parse(meshYaml);
    delete definition.mesh.services.appointment;
    const changed = cache.setSnapshots(views.compile(compiled(definition)));
    expect(views.names).toContain('sidecar:appointment');
    expect(changed['sidecar:appointment']).toEqual(
      expect.arrayContaining([typeUrls.cluster, typeUrls.listener, typeUrls.route, typeUrls.secret]),
    );
    for (const type of [typeUrls.cluster, typeUrls.listener, typeUrls.route, typeUrls.secret]) {
      expect(cache.get(type, 'sidecar:appointment')?.resources.size).toBe(0);
    }
    // customer may no longer call it: its cluster is gone from customer's view too.
    expect([...(cache.get(typeUrls.cluster, 'sidecar:customer')?.resources.keys() ?? [])]).toEqual(['sidecar_app']);
  });

  it('refuses a mesh when the control plane has no mesh CA, naming the field', () => {
    const views = createViews(gatewayViews(), sidecarViews(undefined));
    let error: unknown;
    try {
      views.compile(compiled(parse(meshYaml)));
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(DefinitionRefusedError);
    expect((error as DefinitionRefusedError).errors).toEqual([
      { path: 'mesh', message: expect.stringContaining('no mesh CA') },
    ]);
    expect(views.names).toEqual(['ingress', 'ext-authz', 'ratelimit']);
  });

  it('refuses a mesh whose identities the CA will not issue (another trust domain), naming the field', () => {
    const refusing = {
      secretsFor: (spiffeId: string) => {
        throw new Error(`${spiffeId} is not in the trust domain cluster.local`);
      },
      onRotation: () => {},
    };
    const views = createViews(gatewayViews(refusing), sidecarViews(refusing));
    expect(() => views.compile(compiled(parse(meshYaml)))).toThrow(DefinitionRefusedError);
    try {
      views.compile(compiled(parse(meshYaml)));
    } catch (error) {
      expect((error as DefinitionRefusedError).errors).toEqual([
        { path: 'mesh', message: expect.stringContaining('not in the trust domain cluster.local') },
      ]);
    }
  });

  it('leaves definitions without a mesh as they were: no secrets asked for, no sidecar views', () => {
    const definition = parse(meshYaml);
    delete definition.mesh;
    const views = createViews(gatewayViews(), sidecarViews(undefined));
    const byView = views.compile(compiled(definition));
    expect([...byView.keys()]).toEqual(['ingress', 'ext-authz', 'ratelimit']);
  });

  it('re-packs only the Secrets when the workload certificates rotate: the translated resources are the same objects', () => {
    // A real MeshCa on a clock the test moves: past renewAt, every certificate is replaced.
    const timers: Array<() => void> = [];
    const schedule: Schedule = (_delayMs, run) => {
      timers.push(run);
      return () => {};
    };
    const testCa = createTestCa(join(dir, 'rotating-ca'));
    // Read after the CA exists: read before, a new second in between put its notBefore after "now".
    let now = Date.now();
    const ca = new MeshCa({
      source: { kind: 'files', certFile: testCa.cert, keyFile: testCa.key, bundleFile: testCa.rootCert },
      trustDomain: 'salon.example',
      logger: captureLogger('error').logger,
      registry: new Registry(),
      pollIntervalMs: 0,
      ttlMs: 3_600_000,
      now: () => now,
      schedule,
    });
    let rotations = 0;
    ca.onRotation(() => rotations++);
    try {
      const views = createViews(gatewayViews(ca), sidecarViews(ca));
      const cache = new SnapshotCache();
      const definition = compiled(parse(meshYaml));
      const before = views.compile(definition);
      cache.setSnapshots(before);
      const versionsBefore = cache.versions('sidecar:appointment');

      now += 31 * 60_000;
      for (const run of timers.splice(0)) run();
      expect(rotations).toBe(1);
      const after = views.compile(definition);
      const changed = cache.setSnapshots(after);

      const translatedTypes = [typeUrls.cluster, typeUrls.endpoint, typeUrls.listener, typeUrls.route];
      for (const view of ['sidecar:appointment', 'sidecar:customer']) {
        for (const type of translatedTypes) expect(after.get(view)?.get(type)).toBe(before.get(view)?.get(type));
        expect(after.get(view)?.get(typeUrls.secret)).not.toEqual(before.get(view)?.get(typeUrls.secret));
        expect(changed[view]).toEqual([typeUrls.secret]);
      }
      const versionsAfter = cache.versions('sidecar:appointment');
      for (const type of translatedTypes) expect(versionsAfter[type]).toBe(versionsBefore[type]);
      expect(versionsAfter[typeUrls.secret]).not.toBe(versionsBefore[typeUrls.secret]);

      // A new compiled definition (an edit) is translated afresh.
      const edited = views.compile(compiled(parse(meshYaml)));
      expect(edited.get('sidecar:customer')?.get(typeUrls.listener)).not.toBe(
        after.get('sidecar:customer')?.get(typeUrls.listener),
      );
    } finally {
      ca.close();
    }
  });
});
