import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type BuiltService, distEntry, productionNodeFlags, serviceEntries } from '@sekisho/devstack/build';
import { repoRoot } from '@sekisho/devstack/paths';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// There is no Docker engine here, so the Dockerfiles are checked for what can be checked
// without one: the build steps are CI's commands (`npm ci`, `npm run build`), every
// workspace's package.json is copied before `npm ci` (it refuses a lockfile whose workspaces
// are missing), a slim Node 24 base, the run stage holding the workspace's bundle only, a
// numeric non-root user, no HEALTHCHECK, the entrypoint is the bundle `npm run build` writes
// (run with production's V8 flags, and the bundle exists after a build), and the exposed ports
// are the ones k8s/ uses.

const images = [
  { workspace: 'control-plane', deployment: 'k8s/base/control-plane/deployment.yaml' },
  { workspace: 'ext-authz', deployment: 'k8s/base/ext-authz/deployment.yaml' },
  { workspace: 'ratelimit-service', deployment: 'k8s/base/ratelimit-service/deployment.yaml' },
  { workspace: 'injector', deployment: 'k8s/base/injector/deployment.yaml' },
];

describe.each(images)('$workspace/Dockerfile', ({ workspace, deployment }) => {
  const read = async () => {
    const text = await readFile(join(repoRoot, workspace, 'Dockerfile'), 'utf8');
    // Instructions, comments dropped, continuation lines joined.
    return text
      .replace(/\\\n/g, ' ')
      .split('\n')
      .filter((l) => l.trim() && !l.trim().startsWith('#'));
  };

  it('builds in stages from a slim Node 24 base with the commands CI runs', async () => {
    const lines = await read();
    const root = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8'));
    expect(lines).toContain('ARG NODE_IMAGE=node:24-bookworm-slim');
    expect(lines.filter((l) => /^FROM \$\{NODE_IMAGE\}/.test(l)).length).toBe(2);
    expect(lines).toContain('RUN npm ci');
    expect(lines).toContain('RUN npm run build');
    expect(root.scripts.build, 'the root package.json has the build script').toBeDefined();
    for (const ws of root.workspaces as string[]) {
      expect(lines, `build stage copies ${ws}/package.json`).toContain(`COPY ${ws}/package.json ${ws}/`);
    }
    // The run stage takes the workspace's bundle and nothing else (no node_modules, no sources).
    expect(lines.filter((l) => l.startsWith('COPY --from=build'))).toEqual([
      `COPY --from=build /src/dist/${workspace} ./dist/${workspace}`,
    ]);
  });

  it('runs the compiled main as a numeric non-root user, with no HEALTHCHECK', async () => {
    const lines = await read();
    const final = lines.slice(lines.lastIndexOf(lines.filter((l) => l.startsWith('FROM')).at(-1) as string));
    expect(final).toContain('USER 1000:1000');
    expect(lines.some((l) => l.startsWith('HEALTHCHECK'))).toBe(false);
    const entrypoint = JSON.parse(
      (final.find((l) => l.startsWith('ENTRYPOINT')) as string).slice('ENTRYPOINT '.length),
    );
    const service = workspace as BuiltService;
    expect(Object.keys(serviceEntries)).toContain(service);
    expect(entrypoint).toEqual(['node', ...productionNodeFlags, '--enable-source-maps', `dist/${workspace}/main.js`]);
    expect(distEntry(service, 'dist')).toBe(`dist/${workspace}/main.js`);
    expect(existsSync(join(repoRoot, serviceEntries[service]))).toBe(true);
  });

  it('exposes the ports its k8s Deployment declares', async () => {
    const lines = await read();
    const exposed = (lines.find((l) => l.startsWith('EXPOSE')) as string).split(/\s+/).slice(1).map(Number);
    const d = parse(await readFile(join(repoRoot, deployment), 'utf8'));
    const declared = d.spec.template.spec.containers[0].ports.map((p: { containerPort: number }) => p.containerPort);
    expect(exposed.sort()).toEqual(declared.sort());
  });
});
