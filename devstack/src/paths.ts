import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the repository root (this file is devstack/src/paths.ts). */
export const repoRoot: string = fileURLToPath(new URL('../../', import.meta.url));

/** A path under the git-ignored `<repo>/.cache/` folder for downloaded tools and dev keys. */
export function cacheDir(...parts: string[]): string {
  return join(repoRoot, '.cache', ...parts);
}
