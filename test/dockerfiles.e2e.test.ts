import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import {
  type BuiltService,
  buildServices,
  distEntry,
  productionNodeEnv,
  productionNodeFlags,
  serviceEntries,
} from '@sekisho/devstack/build';
import { repoRoot } from '@sekisho/devstack/paths';
import { freePort, type ManagedProcess, spawnProcess } from '@sekisho/devstack/processes';
import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { AccessLogServiceClient, StreamAccessLogsMessage } from '@sekisho/proto/envoy/service/accesslog/v3/als';
import { entry } from '@sekisho/threat-detector/test-entries';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// There is no Docker engine here, so the Dockerfiles are checked for what can be checked
// without one: the build steps are CI's commands (`npm ci`, `npm run build`), every
// workspace's package.json is copied before `npm ci` (it refuses a lockfile whose workspaces
// are missing), a slim Node 24 base, the run stage holding the workspace's bundle only, a
// numeric non-root user, no HEALTHCHECK, the entrypoint is the bundle `npm run build` writes
// (run with production's V8 flags and environment, and the bundle exists after a build), and the exposed ports
// are the ones k8s/ uses. The threat detector's image is also run the way its run stage would:
// the bundle the build writes, copied alone where the COPY puts it, started by the ENTRYPOINT
// from the WORKDIR as a plain process, answering its admin and gRPC ports with a real Redis.

const images = [
  { workspace: 'control-plane', deployment: 'k8s/base/control-plane/deployment.yaml' },
  { workspace: 'ext-authz', deployment: 'k8s/base/ext-authz/deployment.yaml' },
  { workspace: 'ratelimit-service', deployment: 'k8s/base/ratelimit-service/deployment.yaml' },
  { workspace: 'injector', deployment: 'k8s/base/injector/deployment.yaml' },
  { workspace: 'threat-detector', deployment: 'k8s/base/threat-detector/deployment.yaml' },
];

/** A Dockerfile's instructions, comments dropped, continuation lines joined. */
async function instructions(workspace: string): Promise<string[]> {
  const text = await readFile(join(repoRoot, workspace, 'Dockerfile'), 'utf8');
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#'));
}

describe.each(images)('$workspace/Dockerfile', ({ workspace, deployment }) => {
  const read = () => instructions(workspace);

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
    // Exactly production's flags: no --enable-source-maps (node would parse the whole map at start).
    expect(entrypoint).toEqual(['node', ...productionNodeFlags, `dist/${workspace}/main.js`]);
    // And production's environment (MALLOC_ARENA_MAX), each variable on an ENV line of its own.
    for (const [name, value] of Object.entries(productionNodeEnv)) expect(final).toContain(`ENV ${name}=${value}`);
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

describe('threat-detector/Dockerfile, its run stage as a process', () => {
  let dir: string;
  let redis: RedisHandle;
  let detector: ManagedProcess | undefined;
  const clients: AccessLogServiceClient[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-image-'));
    redis = await startRedis();
  }, 60_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    await detector?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs the bundle alone from the WORKDIR with the ENTRYPOINT, answers its ports and stops cleanly', async () => {
    const lines = await instructions('threat-detector');
    const run = lines.slice(lines.lastIndexOf(lines.filter((l) => l.startsWith('FROM')).at(-1) as string));
    const workdir = (run.find((l) => l.startsWith('WORKDIR')) as string).split(/\s+/)[1] as string;
    const [from, to] = (run.find((l) => l.startsWith('COPY --from=build')) as string).split(/\s+/).slice(2);
    const entrypoint: string[] = JSON.parse(
      (run.find((l) => l.startsWith('ENTRYPOINT')) as string).slice('ENTRYPOINT '.length),
    );
    // The build stage's `npm run build` (devstack/src/build.ts) into a folder standing for /src/dist.
    expect(from).toBe('/src/dist/threat-detector');
    await buildServices(join(dir, 'src', 'dist'));
    // The run stage: the image's WORKDIR holds that folder and nothing else (no node_modules anywhere above).
    const app = join(dir, workdir);
    await mkdir(app, { recursive: true });
    await cp(join(dir, from as string), join(app, to as string), { recursive: true });
    const [grpcPort, adminPort] = [await freePort(), await freePort()];
    const [command, ...args] = entrypoint;
    expect(command).toBe('node');
    detector = spawnProcess({
      name: 'threat-detector-image',
      command: process.execPath,
      args,
      cwd: app,
      // The Deployment's settings, on free loopback ports (the pod listens on 0.0.0.0:9003/9103).
      env: {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'production',
        THREAT_HOST: '127.0.0.1',
        THREAT_GRPC_PORT: String(grpcPort),
        THREAT_ADMIN_PORT: String(adminPort),
        THREAT_REDIS_URL: redis.url,
        SEKISHO_WORKERS: '1',
      },
    });
    const admin = `http://127.0.0.1:${adminPort}`;
    // What the Deployment's probes ask.
    await detector.waitForHttp(`${admin}/healthz`, 30_000);
    await detector.waitForHttp(`${admin}/readyz`, 5_000);
    await detector.waitForHttp(
      `${admin}/status`,
      10_000,
      (p) => p.status === 200 && JSON.parse(p.body).redis === 'ready',
    );
    // Envoy's access log on the gRPC port, counted in what Prometheus scrapes.
    const client = new AccessLogServiceClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure());
    clients.push(client);
    await new Promise<void>((resolve, reject) => {
      const call = client.streamAccessLogs((error) => (error ? reject(error) : resolve()));
      call.write(
        StreamAccessLogsMessage.fromPartial({ identifier: { node: { id: 'ingress' }, logName: 'sekisho_threat' } }),
      );
      call.write(StreamAccessLogsMessage.fromPartial({ httpLogs: { logEntry: [entry({ ip: '198.51.100.7' })] } }));
      call.end();
    });
    await detector.waitForHttp(`${admin}/metrics`, 10_000, (p) =>
      /^sekisho_threat_log_entries_total\{[^}]*\} 1$/m.test(p.body),
    );
    // SIGTERM, as the kubelet sends it: a graceful stop, exit 0.
    await detector.stop();
    expect(detector.exitInfo(), detector.logs()).toMatchObject({ code: 0 });
  }, 120_000);
});
