// The watcher with views that follow the definition: a mesh refused without a mesh CA (the
// last good snapshot stays, the error names `mesh`), and a restart with an invalid file that
// serves the saved sidecar views too.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { createMeshPki, secretsOf } from '../../test/mesh-pki';
import { LastGoodStore } from './last-good';
import type { WorkloadSecrets } from './mesh/contract';
import { DefinitionWatcher } from './watch';
import { SnapshotCache } from './xds/cache';
import { captureLogger, eventually } from './xds/test-helpers';
import { typeUrls } from './xds/type-urls';
import { createViews, gatewayViews, sidecarViews, type Views } from './xds/views';

const meshFile = resolve(import.meta.dirname, 'translate/testdata/in/mesh.yaml');

describe('DefinitionWatcher with sidecar views', () => {
  let dir: string;
  let file: string;
  let watcher: DefinitionWatcher | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-watch-mesh-'));
    file = join(dir, 'gateway.yaml');
  });
  afterEach(async () => {
    await watcher?.stop();
    watcher = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a mesh when no mesh CA is configured, naming the field, and keeps serving the last good one', async () => {
    const withMesh = parse(await readFile(meshFile, 'utf8'));
    const withoutMesh = { ...withMesh, mesh: undefined };
    await writeFile(file, stringify(withoutMesh));
    const cache = new SnapshotCache();
    const views = createViews(gatewayViews(), sidecarViews(undefined));
    watcher = new DefinitionWatcher({
      path: file,
      cache,
      views,
      logger: captureLogger('info').logger,
      registry: new Registry(),
    });
    expect((await watcher.reload('initial')).ok).toBe(true);
    const before = cache.versions('ingress');

    await writeFile(file, stringify(withMesh));
    const refused = await watcher.reload('test');
    expect(refused.ok ? [] : refused.errors).toEqual([{ path: 'mesh', message: expect.stringContaining('mesh CA') }]);
    expect(cache.versions('ingress')).toEqual(before);
    expect(views.names).not.toContain('sidecar:customer');
  });

  it('serves every view again with the new certificate when the mesh CA rotates one', async () => {
    await writeFile(file, await readFile(meshFile, 'utf8'));
    const pki = createMeshPki(join(dir, 'pki'));
    // A mesh CA in miniature: a new certificate per generation, and a rotation signal.
    let generation = 0;
    const listeners: Array<() => void> = [];
    const issued = new Map<string, ReturnType<typeof secretsOf>>();
    const secrets: WorkloadSecrets = {
      // The same certificate until the generation changes, as the contract says.
      secretsFor: (spiffeId) => {
        const key = `gen-${generation}-${spiffeId.split('/').pop()}`;
        const found = issued.get(key) ?? secretsOf(pki.issue(key, spiffeId), pki.caPem);
        issued.set(key, found);
        return found;
      },
      onRotation: (listener) => listeners.push(listener),
    };
    const cache = new SnapshotCache();
    const views = createViews(gatewayViews(secrets), sidecarViews(secrets));
    watcher = new DefinitionWatcher({
      path: file,
      cache,
      views,
      logger: captureLogger('info').logger,
      registry: new Registry(),
      debounceMs: 20,
    });
    secrets.onRotation(() => watcher?.refresh('workload certificate rotated'));
    expect((await watcher.reload('initial')).ok).toBe(true);
    watcher.start();
    const before = cache.versions('sidecar:customer');
    const beforeIngress = cache.versions('ingress');

    generation++;
    for (const listener of listeners) listener();
    await eventually(
      () => cache.versions('sidecar:customer')[typeUrls.secret] !== before[typeUrls.secret],
      5_000,
      'the rotated certificate served',
    );
    expect(cache.versions('ingress')[typeUrls.secret]).not.toBe(beforeIngress[typeUrls.secret]);
    const after = cache.versions('sidecar:customer');
    // Only the Secrets change: no listener or cluster is pushed for a rotation.
    expect(after[typeUrls.listener]).toBe(before[typeUrls.listener]);
    expect(after[typeUrls.cluster]).toBe(before[typeUrls.cluster]);
  });

  it('serves the saved sidecar views when the file is invalid at start-up, with current workload certificates', async () => {
    await writeFile(file, await readFile(meshFile, 'utf8'));
    const secrets = createMeshPki(join(dir, 'pki')).workloadSecrets();
    const store = new LastGoodStore(join(dir, 'state'));
    const viewsWith = (viewSecrets?: WorkloadSecrets) =>
      createViews(gatewayViews(viewSecrets), sidecarViews(viewSecrets));
    /** A watcher of `file` saving to `store`; `watcherSecrets` gives saved workloads their certificates. */
    const watcherWith = (cache: SnapshotCache, views: Views, watcherSecrets?: WorkloadSecrets) =>
      new DefinitionWatcher({
        path: file,
        cache,
        views,
        store,
        ...(watcherSecrets ? { secrets: watcherSecrets } : {}),
        logger: captureLogger('info').logger,
        registry: new Registry(),
      });
    const first = watcherWith(new SnapshotCache(), viewsWith(secrets));
    expect((await first.reload('initial')).ok).toBe(true);
    await first.stop();

    // No workload's private key is written to disk; the certificate (whose SAN names it) is.
    const savedFile = JSON.parse(await readFile(store.file, 'utf8')) as {
      views: Array<{ resources: Array<{ value: string }> }>;
    };
    const savedValues = savedFile.views.flatMap((v) => v.resources.map((r) => Buffer.from(r.value, 'base64')));
    expect(savedValues.some((value) => value.includes('PRIVATE KEY'))).toBe(false);
    expect(savedValues.some((value) => value.includes('BEGIN CERTIFICATE'))).toBe(true);

    await writeFile(file, 'routes: [');
    // Without a mesh CA, saved mesh workloads cannot be given a certificate: not served.
    const withoutCa = watcherWith(new SnapshotCache(), viewsWith());
    expect(await withoutCa.serveSaved(await withoutCa.reload('initial', { quiet: true }))).toBe(false);

    const cache = new SnapshotCache();
    const views = viewsWith(secrets);
    watcher = watcherWith(cache, views, secrets);
    const invalid = await watcher.reload('initial', { quiet: true });
    expect(invalid.ok).toBe(false);
    expect(await watcher.serveSaved(invalid)).toBe(true);
    // Each workload is served the mesh CA's current certificate for its identity, key included.
    const served = cache.get(typeUrls.secret, 'sidecar:customer')?.resources.get('sekisho-mesh-certificate');
    expect(served).toBeDefined();
    expect(served?.resource).toEqual(
      secrets
        .secretsFor('spiffe://salon.example/ns/salon/sa/customer')
        .find((r) => r.name === 'sekisho-mesh-certificate')?.resource,
    );
    expect(views.names).toEqual(['ingress', 'ext-authz', 'ratelimit', 'sidecar:appointment', 'sidecar:customer']);
    expect([...(cache.get(typeUrls.listener, 'sidecar:customer')?.resources.keys() ?? [])]).toEqual([
      'sidecar_inbound',
      'sidecar_outbound',
    ]);
  });
});
