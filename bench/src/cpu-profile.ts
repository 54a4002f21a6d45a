import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

// A first reading of a V8 .cpuprofile: self time grouped by where the code lives (an npm
// package, a file of this repository, Node's internals, the garbage collector, idle).

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string } }>;
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives: `@grpc/grpc-js`, `ratelimit-service/src/service.ts`, `node:internal`, `(garbage collector)`. */
export function codeOwner(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (inPackage) return inPackage[1] as string;
  if (url.startsWith('node:')) return url.startsWith('node:internal') ? 'node:internal' : url;
  const inRepo = /\/((?:[a-z-]+)\/(?:src|gen)\/.+)$/.exec(url.replace(/^file:\/\//, ''));
  return inRepo ? (inRepo[1] as string) : url;
}

/** Self time per owner, in % of the busy time (idle left out: a server waits between runs), highest first. */
export function selfTimeByOwner(profile: CpuProfile): Array<{ owner: string; percent: number }> {
  const owners = new Map(profile.nodes.map((n) => [n.id, codeOwner(n.callFrame.url, n.callFrame.functionName)]));
  const time = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    const owner = owners.get(id) ?? '(unknown)';
    if (owner === '(idle)') return;
    total += delta;
    time.set(owner, (time.get(owner) ?? 0) + delta);
  });
  return [...time]
    .map(([owner, t]) => ({ owner, percent: total > 0 ? Math.round((t / total) * 1000) / 10 : 0 }))
    .sort((a, b) => b.percent - a.percent);
}

/** Prints the top owners of each profile in `dir` written since `since` (ms since epoch). */
export async function printProfiles(dir: string, since: number, top = 12): Promise<void> {
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.cpuprofile'));
  for (const file of files) {
    const stamp = Number(/\.(\d{13})\.cpuprofile$/.exec(file)?.[1]);
    if (!(stamp >= since)) continue;
    const profile = JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile;
    console.log(`\n${file}: self time by code owner, % of busy time (start-up included)`);
    for (const { owner, percent } of selfTimeByOwner(profile).slice(0, top)) {
      console.log(`  ${String(percent).padStart(5)} %  ${owner}`);
    }
  }
}
