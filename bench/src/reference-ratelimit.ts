import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from '@sekisho/devstack/host';

// envoyproxy/ratelimit, the reference the issue compares against: installed with `go install`
// into a git-ignored folder, and configured with a YAML file equivalent to the bench policy.

export const referenceModule = 'github.com/envoyproxy/ratelimit/src/service_cmd@latest';

export type Installed = { ok: true; bin: string; version: string } | { ok: false; reason: string };

/** Installs (or reuses) the reference binary; never throws: a missing Go is a reason, not a crash. */
export async function installReference(gobin: string): Promise<Installed> {
  const bin = join(gobin, 'service_cmd');
  const go = findOnPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!existsSync(bin)) {
    if (!go)
      return { ok: false, reason: 'Go is not installed (go not on PATH), so envoyproxy/ratelimit was not built' };
    console.log(`installing ${referenceModule} into ${gobin} (go install)…`);
    const failure = await new Promise<string | undefined>((resolve) =>
      execFile(
        go,
        ['install', referenceModule],
        { env: { ...process.env, GOBIN: gobin }, timeout: 600_000 },
        (e, _o, err) =>
          resolve(
            e
              ? `go install ${referenceModule} failed: ${err.trim().split('\n').slice(-5).join(' | ') || e.message}`
              : undefined,
          ),
      ),
    );
    if (failure) return { ok: false, reason: failure };
    if (!existsSync(bin)) return { ok: false, reason: `go install succeeded but ${bin} is missing` };
  }
  const version = go
    ? await new Promise<string>((resolve) =>
        execFile(go, ['version', '-m', bin], (e, out) =>
          resolve(e ? 'unknown' : (/\tmod\t\S+\t(\S+)/.exec(out)?.[1] ?? 'unknown')),
        ),
      )
    : 'unknown';
  return { ok: true, bin, version };
}

/** Per-route, per-user limits: the same rules as the Sekisho policy of the benchmark. */
export function referenceYaml(
  domain: string,
  keys: { route: string; user: string },
  routes: readonly string[],
  requestsPerMinute: number,
): string {
  const lines = [`domain: ${domain}`, 'descriptors:'];
  for (const route of routes) {
    lines.push(
      `  - key: ${keys.route}`,
      `    value: ${route}`,
      '    descriptors:',
      `      - key: ${keys.user}`,
      '        rate_limit:',
      '          unit: minute',
      `          requests_per_unit: ${requestsPerMinute}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
