import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LastGoodStore } from './last-good';
import { DefinitionWatcher } from './watch';
import { SnapshotCache } from './xds/cache';
// The real compileDefinitionFile on a YAML file in a temp directory.
import { captureLogger, eventually, testDefinitionYaml, tlsSecret } from './xds/test-helpers';
import { typeUrls } from './xds/type-urls';
import { createViews, gatewayViews, typesOnly } from './xds/views';

describe('DefinitionWatcher', () => {
  let dir: string;
  let file: string;
  let watcher: DefinitionWatcher | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-watch-'));
    file = join(dir, 'gateway.yaml');
  });
  afterEach(async () => {
    await watcher?.stop();
    watcher = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function startWatcher() {
    await writeFile(file, testDefinitionYaml());
    const cache = new SnapshotCache();
    const registry = new Registry();
    const { logger, records } = captureLogger('info');
    watcher = new DefinitionWatcher({ path: file, cache, logger, registry, debounceMs: 50, pollIntervalMs: 400 });
    const initial = await watcher.reload('initial');
    expect(initial.ok).toBe(true);
    watcher.start();
    const reloads = async (result: string) =>
      (await registry.getSingleMetric('sekisho_definition_reloads_total')?.get())?.values.find(
        (v) => v.labels.result === result,
      )?.value ?? 0;
    return { cache, records, reloads, watcher };
  }

  it('serves a valid change: only the changed types get a new version', async () => {
    const { cache, reloads, watcher } = await startWatcher();
    const before = cache.versions();
    await writeFile(file, testDefinitionYaml({ port: 3002 }));
    await eventually(
      () => cache.get(typeUrls.endpoint)?.version !== before[typeUrls.endpoint],
      5_000,
      'new EDS version',
    );
    const after = cache.versions();
    expect(after[typeUrls.cluster]).toBe(before[typeUrls.cluster]);
    expect(after[typeUrls.listener]).toBe(before[typeUrls.listener]);
    expect(watcher.status().lastReload).toMatchObject({ result: 'ok', errors: [], changedTypes: [typeUrls.endpoint] });
    expect(await reloads('ok')).toBe(2);
  });

  it('keeps the last good snapshot when the file becomes invalid, and reports why', async () => {
    const { cache, records, reloads, watcher } = await startWatcher();
    const before = cache.versions();
    await writeFile(file, testDefinitionYaml({ to: 'nosuchservice' }));
    const last = await eventually(
      () => (watcher.status().lastReload?.result === 'invalid' ? watcher.status().lastReload : undefined),
      5_000,
      'invalid reload',
    );
    expect(last?.errors[0]?.path).toBe('routes[0].to');
    expect(last?.errors[0]?.message).toContain('nosuchservice');
    expect(cache.versions()).toEqual(before);
    expect(records).toContainEqual(
      expect.objectContaining({ level: 'ERROR', event_type: 'definition_invalid', field: 'routes[0].to' }),
    );
    expect(await reloads('invalid')).toBe(1);

    // Fixing the file serves again.
    await writeFile(file, testDefinitionYaml({ port: 3003 }));
    await eventually(() => watcher.status().lastReload?.result === 'ok', 5_000, 'fixed reload');
    expect(cache.versions()[typeUrls.endpoint]).not.toBe(before[typeUrls.endpoint]);
  });

  it('follows an editor-style save (new file renamed over the old one)', async () => {
    const { cache } = await startWatcher();
    const before = cache.versions()[typeUrls.endpoint];
    const temp = join(dir, '.gateway.yaml.swp');
    await writeFile(temp, testDefinitionYaml({ port: 3004 }));
    await rename(temp, file);
    await eventually(() => cache.versions()[typeUrls.endpoint] !== before, 5_000, 'reload after rename');
    // Still watching after the rename.
    const second = cache.versions()[typeUrls.endpoint];
    await writeFile(file, testDefinitionYaml({ port: 3005 }));
    await eventually(() => cache.versions()[typeUrls.endpoint] !== second, 5_000, 'reload after second save');
  });

  it('reports a missing initial file as an error without touching the cache', async () => {
    const cache = new SnapshotCache();
    const { logger } = captureLogger('info');
    watcher = new DefinitionWatcher({ path: join(dir, 'absent.yaml'), cache, logger, registry: new Registry() });
    const result = await watcher.reload('initial', { quiet: true });
    expect(result.ok).toBe(false);
    expect(cache.hasSnapshot()).toBe(false);
    expect(watcher.status().lastReload?.result).toBe('invalid');
  });

  it('reloads a burst of changes that never pauses once the ceiling is reached, not only after it', async () => {
    await writeFile(file, testDefinitionYaml());
    const cache = new SnapshotCache();
    const { logger } = captureLogger('info');
    // A quiet period far longer than the burst: only the ceiling can reload during it.
    watcher = new DefinitionWatcher({
      path: file,
      cache,
      logger,
      registry: new Registry(),
      debounceMs: 60_000,
      maxDelayMs: 300,
      pollIntervalMs: 60_000,
    });
    await watcher.reload('initial');
    watcher.start();
    const before = cache.versions()[typeUrls.endpoint];
    let reloadedDuringBurst = false;
    for (let i = 0; i < 100 && !reloadedDuringBurst; i += 1) {
      await writeFile(file, testDefinitionYaml({ port: 4000 + i }));
      await new Promise((r) => setTimeout(r, 50));
      reloadedDuringBurst = cache.versions()[typeUrls.endpoint] !== before;
    }
    expect(reloadedDuringBurst).toBe(true);
  });

  it('does not serve a saved definition that lacks a view it serves (saved by another version)', async () => {
    const store = new LastGoodStore(join(dir, 'state'));
    await store.save(file, new Map([['ingress', new Map()]]));
    const cache = new SnapshotCache();
    const { logger, records } = captureLogger('info');
    watcher = new DefinitionWatcher({
      path: file,
      cache,
      logger,
      registry: new Registry(),
      views: createViews(gatewayViews()),
      store,
    });
    const invalid = await watcher.reload('initial', { quiet: true });
    expect(invalid.ok).toBe(false);
    expect(await watcher.serveSaved(invalid)).toBe(false);
    expect(cache.groupNames()).toEqual([]);
    expect(records).toContainEqual(
      expect.objectContaining({ event_type: 'definition_saved_unusable', missing_views: ['ext-authz', 'ratelimit'] }),
    );
  });
  it('refresh() serves every view again from the last compiled definition without reading the file', async () => {
    await writeFile(file, testDefinitionYaml());
    const cache = new SnapshotCache();
    const { logger, records } = captureLogger('info');
    // A view with something of its own clock, as a mesh view's workload certificate is.
    let serial = 1;
    const views = createViews([
      ...gatewayViews(),
      {
        name: 'sidecar:customer',
        matches: () => false,
        select: (compiled) =>
          new Map([
            ...typesOnly([typeUrls.cluster])(compiled),
            [typeUrls.secret, [tlsSecret('workload', `certificate ${serial}`)]],
          ]),
      },
    ]);
    let compiles = 0;
    watcher = new DefinitionWatcher({
      path: file,
      cache,
      logger,
      registry: new Registry(),
      views,
      compile: async (path) => {
        compiles++;
        return (await import('./definition/load')).compileDefinitionFile(path);
      },
    });
    expect(watcher.refresh('before any compile')).toBe(false);
    expect((await watcher.reload('initial')).ok).toBe(true);
    const before = cache.versions('sidecar:customer');
    const ingress = cache.versions('ingress');
    // Broken on disk: a refresh must not read it.
    await writeFile(file, 'routes: [');
    serial = 2;
    expect(watcher.refresh('certificate rotated')).toBe(true);
    expect(compiles).toBe(1);
    const after = cache.versions('sidecar:customer');
    expect(after[typeUrls.secret]).not.toBe(before[typeUrls.secret]);
    expect(after[typeUrls.cluster]).toBe(before[typeUrls.cluster]);
    expect(cache.versions('ingress')).toEqual(ingress);
    expect(records.find((r) => r.event_type === 'definition_refreshed')).toMatchObject({
      trigger: 'certificate rotated',
      changed_by_view: { 'sidecar:customer': [typeUrls.secret] },
    });
  });
});
