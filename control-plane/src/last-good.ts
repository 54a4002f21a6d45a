import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { ResourcesByType } from './xds/resources';

// The last good compiled definition, on disk: a control plane restarted while its definition
// file is invalid serves this instead of staying down. What is kept is what was served: each
// view's resources (every type, packed), not the source: a TypeScript definition imports
// modules and names certificate files whose content the resources already hold, and a view
// may be translated from the IR (a sidecar's), which a restart could not redo without a
// valid file. They can hold the ingress's TLS private keys (mesh workload keys are left out:
// mesh/saved-secrets.ts), so the directory is 0700 and the file 0600. Written atomically (a temporary
// file, fsync, rename), so a crash mid-write leaves the previous file whole.

export const lastGoodFileName = 'last-good-definition.json';

const fileSchema = z.object({
  format: z.literal(1),
  /** The definition file it was compiled from: a state directory reused for another is ignored. */
  definition: z.string(),
  savedAt: z.string(),
  views: z.array(
    z.object({
      view: z.string().min(1),
      /** Every type of the view, also those with no resource (an empty type has a version too). */
      types: z.array(z.string().min(1)),
      resources: z.array(z.object({ typeUrl: z.string().min(1), name: z.string(), value: z.base64() })),
    }),
  ),
});

export interface LastGood {
  definition: string;
  savedAt: string;
  /** View (snapshot group) → its resources. */
  groups: Map<string, ResourcesByType>;
}

export class LastGoodStore {
  readonly file: string;

  constructor(readonly dir: string) {
    this.file = join(dir, lastGoodFileName);
  }

  async save(definition: string, groups: ReadonlyMap<string, ResourcesByType>): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const body = JSON.stringify({
      format: 1,
      definition,
      savedAt: new Date().toISOString(),
      views: [...groups].map(([view, resources]) => ({
        view,
        types: [...resources.keys()],
        resources: [...resources].flatMap(([typeUrl, list]) =>
          list.map((r) => ({ typeUrl, name: r.name, value: Buffer.from(r.resource.value).toString('base64') })),
        ),
      })),
    });
    const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const handle = await open(tmp, 'w', 0o600);
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await chmod(tmp, 0o600);
      await rename(tmp, this.file);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
  }

  /**
   * The saved definition of `definition`, or undefined when there is none (no file, or one
   * saved for another definition file). A file that is there but unreadable throws, naming it.
   */
  async load(definition: string): Promise<LastGood | undefined> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    let parsed: z.output<typeof fileSchema>;
    try {
      parsed = fileSchema.parse(JSON.parse(text));
    } catch (error) {
      throw new Error(`${this.file} is not a saved definition: ${error instanceof Error ? error.message : error}`);
    }
    if (parsed.definition !== definition) return undefined;
    const groups = new Map<string, ResourcesByType>();
    for (const { view, types, resources: saved } of parsed.views) {
      const resources: ResourcesByType = new Map(types.map((type) => [type, []]));
      for (const r of saved) {
        const list = resources.get(r.typeUrl) ?? [];
        list.push({ name: r.name, resource: { typeUrl: r.typeUrl, value: Buffer.from(r.value, 'base64') } });
        resources.set(r.typeUrl, list);
      }
      groups.set(view, resources);
    }
    return { definition: parsed.definition, savedAt: parsed.savedAt, groups };
  }
}
