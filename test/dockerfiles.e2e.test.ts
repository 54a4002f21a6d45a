import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '@sekisho/devstack/paths';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// There is no Docker engine here, so the Dockerfiles are checked for what can be checked
// without one: the build steps are CI's commands (`npm ci`, `npm run build`, `npm ci
// --omit=dev` for the one workspace), every workspace's package.json is copied before `npm ci`
// (it refuses a lockfile whose workspaces are missing), a slim Node 24 base, a numeric
// non-root user, no HEALTHCHECK, the entrypoint is the workspace's main, and the exposed ports
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
    expect(lines.filter((l) => /^FROM \$\{NODE_IMAGE\}/.test(l)).length).toBe(3);
    expect(lines).toContain('RUN npm ci');
    expect(lines).toContain('RUN npm run build');
    expect(root.scripts.build, 'the root package.json has the build script').toBeDefined();
    const name = JSON.parse(await readFile(join(repoRoot, workspace, 'package.json'), 'utf8')).name;
    expect(lines).toContain(`RUN npm ci --omit=dev --workspace ${name}`);
    for (const ws of root.workspaces as string[]) {
      expect(lines, `build stage copies ${ws}/package.json`).toContain(`COPY ${ws}/package.json ${ws}/`);
      expect(lines, `deps stage copies ${ws}/package.json`).toContain(
        `COPY --from=build /src/${ws}/package.json ${ws}/`,
      );
    }
  });

  it('runs the compiled main as a numeric non-root user, with no HEALTHCHECK', async () => {
    const lines = await read();
    const final = lines.slice(lines.lastIndexOf(lines.filter((l) => l.startsWith('FROM')).at(-1) as string));
    expect(final).toContain('USER 1000:1000');
    expect(lines.some((l) => l.startsWith('HEALTHCHECK'))).toBe(false);
    const entrypoint = JSON.parse(
      (final.find((l) => l.startsWith('ENTRYPOINT')) as string).slice('ENTRYPOINT '.length),
    );
    expect(entrypoint).toEqual(['node', '--enable-source-maps', `dist/${workspace}/src/main.js`]);
    expect(existsSync(join(repoRoot, workspace, 'src', 'main.ts'))).toBe(true);
  });

  it('exposes the ports its k8s Deployment declares', async () => {
    const lines = await read();
    const exposed = (lines.find((l) => l.startsWith('EXPOSE')) as string).split(/\s+/).slice(1).map(Number);
    const d = parse(await readFile(join(repoRoot, deployment), 'utf8'));
    const declared = d.spec.template.spec.containers[0].ports.map((p: { containerPort: number }) => p.containerPort);
    expect(exposed.sort()).toEqual(declared.sort());
  });
});
