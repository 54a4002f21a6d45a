import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the repository root (this file is devstack/src/paths.ts). */
export const repoRoot: string = fileURLToPath(new URL('../../', import.meta.url));

/** A path under the git-ignored `<repo>/.cache/` folder for downloaded tools and dev keys. */
export function cacheDir(...parts: string[]): string {
  return join(repoRoot, '.cache', ...parts);
}

/**
 * The gateway definition `npm start` serves and `npm run mint-token` reads: SEKISHO_DEFINITION
 * (relative to the repository root, or absolute), else the example salon gateway.
 */
export function devDefinitionFile(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(repoRoot, env.SEKISHO_DEFINITION || 'control-plane/examples/salon.gateway.ts');
}

/** The development CA that signed the example definition's certificate (`curl --cacert` it). */
export const devCertificateAuthorityFile: string = join(repoRoot, 'control-plane/examples/dev-tls/ca.crt');

/**
 * Where a running `npm start` says how to reach its parts (its Redis, for `npm run admin`);
 * written at start, removed at stop. SEKISHO_LOCAL_STACK_FILE moves it (tests).
 */
export function localStackFile(env: NodeJS.ProcessEnv = process.env): string {
  return env.SEKISHO_LOCAL_STACK_FILE || cacheDir('local-stack.json');
}
