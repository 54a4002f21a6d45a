import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from './host';
import { cacheDir } from './paths';

// kustomize renders k8s/ for the manifest tests. It is a Go module: `npm run setup` installs
// the pinned version with `go install` into the git-ignored .cache/k8s/bin.

export const kustomizeModule = 'sigs.k8s.io/kustomize/kustomize/v5@v5.7.1';
export const kustomizeBinDir = cacheDir('k8s', 'bin');

export const kustomizeInstallHint =
  `kustomize is needed to render k8s/: run \`npm run setup\` (it runs \`go install ${kustomizeModule}\` ` +
  `into .cache/k8s/bin; needs Go), or set KUSTOMIZE_BIN to a kustomize v5 binary, or put kustomize on PATH.`;

/** KUSTOMIZE_BIN, else .cache/k8s/bin/kustomize, else kustomize on PATH. */
export function findKustomize(): string | undefined {
  if (process.env.KUSTOMIZE_BIN) return existsSync(process.env.KUSTOMIZE_BIN) ? process.env.KUSTOMIZE_BIN : undefined;
  const cached = join(kustomizeBinDir, 'kustomize');
  if (existsSync(cached)) return cached;
  return findOnPath('kustomize');
}

function goBinary(): string | undefined {
  return findOnPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
}

/** Finds kustomize or installs it with `go install`; throws the install hint when neither works. */
export async function ensureKustomize(): Promise<string> {
  const found = findKustomize();
  if (found) return found;
  const go = goBinary();
  if (!go || process.env.KUSTOMIZE_BIN) throw new Error(kustomizeInstallHint);
  console.log(`setup: installing ${kustomizeModule} into ${kustomizeBinDir} (go install)`);
  await new Promise<void>((resolve, reject) =>
    execFile(
      go,
      ['install', kustomizeModule],
      { env: { ...process.env, GOBIN: kustomizeBinDir }, timeout: 900_000 },
      (e, _o, err) =>
        e
          ? reject(
              new Error(
                `go install ${kustomizeModule} failed: ${err.trim().split('\n').slice(-5).join(' | ') || e.message}`,
              ),
            )
          : resolve(),
    ),
  );
  const installed = findKustomize();
  if (!installed)
    throw new Error(`go install ${kustomizeModule} succeeded but ${kustomizeBinDir}/kustomize is missing`);
  return installed;
}

/** `kustomize build <dir>`: the rendered YAML, or an error with kustomize's message. */
export function kustomizeBuild(bin: string, dir: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(bin, ['build', dir], { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }, (e, out, err) =>
      e ? reject(new Error(`kustomize build ${dir} failed: ${err.trim() || e.message}`)) : resolve(out),
    ),
  );
}
