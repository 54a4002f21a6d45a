import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LastGoodStore, lastGoodFileName } from './last-good';
import { edsCluster, resourcesOf, routeTo } from './xds/test-helpers';

describe('LastGoodStore', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-state-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips the resources of a definition, byte for byte, in a 0600 file and leaves no temporary file', async () => {
    const store = new LastGoodStore(join(dir, 'state'));
    const resources = resourcesOf(edsCluster('a'), routeTo('r', 'a'));
    const groups = new Map([
      ['ingress', resources],
      ['ext-authz', new Map()],
    ]);
    await store.save('/defs/gateway.ts', groups);
    await store.save('/defs/gateway.ts', groups);
    const loaded = await store.load('/defs/gateway.ts');
    expect([...(loaded?.groups.keys() ?? [])]).toEqual(['ingress', 'ext-authz']);
    expect(loaded?.groups.get('ingress')).toEqual(
      new Map(
        [...resources].map(([type, list]) => [
          type,
          list.map((r) => ({
            name: r.name,
            resource: { typeUrl: r.resource.typeUrl, value: Buffer.from(r.resource.value) },
          })),
        ]),
      ),
    );
    expect(await readdir(join(dir, 'state'))).toEqual([lastGoodFileName]);
    expect((await stat(store.file)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'state'))).mode & 0o777).toBe(0o700);
  });

  it('has nothing for a definition file it was not saved for, or when nothing was saved', async () => {
    const store = new LastGoodStore(dir);
    expect(await store.load('/defs/gateway.ts')).toBeUndefined();
    await store.save('/defs/other.ts', new Map([['ingress', resourcesOf(edsCluster('a'))]]));
    expect(await store.load('/defs/gateway.ts')).toBeUndefined();
  });

  it('names the file when what is there is not a saved definition', async () => {
    const store = new LastGoodStore(dir);
    await writeFile(store.file, '{"format": 2}');
    await expect(store.load('/defs/gateway.ts')).rejects.toThrow(`${store.file} is not a saved definition`);
    await writeFile(store.file, 'not json');
    await expect(store.load('/defs/gateway.ts')).rejects.toThrow(store.file);
  });
});
