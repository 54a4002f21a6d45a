import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

// What this machine provides: executables on PATH and a container engine.

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first executable `command` in the directories of `path` (default $PATH). */
export function findOnPath(command: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, command);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** True when testcontainers finds a container runtime (Docker or Podman) that answers. */
export async function dockerAnswers(): Promise<boolean> {
  try {
    // Imported lazily: testcontainers is large and only this fallback needs it.
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}
