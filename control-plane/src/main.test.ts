import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, configSchema, InvalidDefinitionError, startControlPlane } from './main';
import { AdsTestStream, adsClient, captureLogger, eventually, namesIn, testDefinitionYaml } from './xds/test-helpers';
import { typeUrls } from './xds/type-urls';

const repoRoot = resolve(fileURLToPath(import.meta.url), '../../..');

interface StatusBody {
  definition: string;
  versions: Record<string, string>;
  lastReload: unknown;
  nodes: Array<{ types: Record<string, { ackedVersion?: string }> }>;
}

/** Runs main.ts the way operators do, collecting its output. */
function runMain(env: Record<string, string>, onStdout?: (text: string, kill: () => void) => void) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'control-plane/src/main.ts'], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
    onStdout?.(stdout, () => child.kill('SIGTERM'));
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
    child.on('exit', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

describe('control plane main', () => {
  let dir: string;
  let good: string;
  let bad: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-main-'));
    good = join(dir, 'good.yaml');
    bad = join(dir, 'bad.yaml');
    await writeFile(good, testDefinitionYaml());
    await writeFile(bad, testDefinitionYaml({ to: 'nosuchservice' }));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the definition over ADS and reports nodes and versions on /status', async () => {
    const { logger, records } = captureLogger('info');
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: 'good.yaml',
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
    });
    let cp: ControlPlane | undefined;
    const client = { current: undefined as ReturnType<typeof adsClient> | undefined };
    try {
      cp = await startControlPlane(config, { logger, registry: new Registry(), cwd: dir });
      expect(records).toContainEqual(
        expect.objectContaining({ message: 'control plane ready', xds_port: cp.xdsPort, admin_port: cp.adminPort }),
      );
      client.current = adsClient(cp.xdsPort);
      const stream = new AdsTestStream(client.current);
      stream.send({ typeUrl: typeUrls.cluster }, 'main-test-node', 'sekisho-ingress');
      const clusters = await stream.next();
      expect(namesIn(clusters)).toContain('svc_customer');
      stream.ack(clusters);

      const admin = `http://127.0.0.1:${cp.adminPort}`;
      expect((await fetch(`${admin}/readyz`)).status).toBe(200);
      const body = (await (await fetch(`${admin}/status`)).json()) as StatusBody;
      expect(body.definition).toBe(good);
      expect(body.versions[typeUrls.cluster]).toBe(clusters.versionInfo);
      expect(body.lastReload).toMatchObject({ result: 'ok', trigger: 'initial' });
      await eventually(async () => {
        const s = (await (await fetch(`${admin}/status`)).json()) as StatusBody;
        return s.nodes[0]?.types[typeUrls.cluster]?.ackedVersion === clusters.versionInfo;
      });
      const metrics = await (await fetch(`${admin}/metrics`)).text();
      expect(metrics).toContain('sekisho_xds_connected_streams 1');
      expect(metrics).toContain('sekisho_definition_reloads_total{result="ok"} 1');
      expect(metrics).toMatch(
        /sekisho_xds_snapshot_version_info\{group="ingress",type="cluster",version="[0-9a-f]{16}"\} 1/,
      );
      stream.cancel();
    } finally {
      client.current?.close();
      await cp?.close();
    }
  });

  it('restarted while its file is invalid, serves the last good definition it saved and reports the error', async () => {
    const stateDir = join(dir, 'state');
    const file = join(dir, 'restart.yaml');
    await writeFile(file, testDefinitionYaml({ port: 3333 }));
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: 'restart.yaml',
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
      CONTROL_PLANE_STATE_DIR: 'state',
    });
    const first = await startControlPlane(config, {
      logger: captureLogger('info').logger,
      registry: new Registry(),
      cwd: dir,
    });
    const served = first.status().versions as Record<string, string>;
    await first.close();
    expect(await readdir(stateDir)).toEqual(['last-good-definition.json']);
    expect((await stat(join(stateDir, 'last-good-definition.json'))).mode & 0o777).toBe(0o600);

    await writeFile(file, testDefinitionYaml({ to: 'nosuchservice' }));
    const { logger, records } = captureLogger('info');
    let cp: ControlPlane | undefined;
    const client = { current: undefined as ReturnType<typeof adsClient> | undefined };
    try {
      cp = await startControlPlane(config, { logger, registry: new Registry(), cwd: dir });
      expect(cp.status().versions).toEqual(served);
      expect(cp.status().lastReload).toMatchObject({
        result: 'invalid',
        servingSaved: { savedAt: expect.any(String) },
        errors: [expect.objectContaining({ path: 'routes[0].to' }), expect.objectContaining({ path: 'routes[1].to' })],
      });
      expect(records).toContainEqual(expect.objectContaining({ event_type: 'definition_rejected', level: 'ERROR' }));
      client.current = adsClient(cp.xdsPort);
      const stream = new AdsTestStream(client.current);
      stream.send({ typeUrl: typeUrls.cluster }, 'restart-node', 'sekisho-ingress');
      const clusters = await stream.next();
      expect(clusters.versionInfo).toBe(served[typeUrls.cluster]);
      stream.ack(clusters);
      // Fixing the file serves it, as in any reload.
      await writeFile(file, testDefinitionYaml({ port: 3334 }));
      await eventually(
        () => (cp?.status().lastReload as { result?: string } | undefined)?.result === 'ok',
        10_000,
        'fixed reload',
      );
      stream.cancel();
    } finally {
      client.current?.close();
      await cp?.close();
    }
  });

  it('serves identical versions from two replicas given the same definition (content hashes, not counters)', async () => {
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: 'good.yaml',
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
    });
    const replicas: ControlPlane[] = [];
    const clients: Array<ReturnType<typeof adsClient>> = [];
    try {
      for (let i = 0; i < 2; i += 1) {
        replicas.push(
          await startControlPlane(config, { logger: captureLogger('info').logger, registry: new Registry(), cwd: dir }),
        );
      }
      const versions = await Promise.all(
        replicas.map(async (cp) => {
          const client = adsClient(cp.xdsPort);
          clients.push(client);
          const stream = new AdsTestStream(client);
          stream.send({ typeUrl: typeUrls.listener }, 'replica-node', 'sekisho-ingress');
          const listeners = await stream.next();
          stream.cancel();
          return { listeners: listeners.versionInfo, all: cp.status().views };
        }),
      );
      expect(versions[0]).toEqual(versions[1]);
    } finally {
      for (const client of clients) client.close();
      for (const cp of replicas) await cp.close();
    }
  });

  it('refuses to start on an invalid definition, naming every bad field', async () => {
    const { logger } = captureLogger('info');
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: bad,
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
    });
    const error = await startControlPlane(config, { logger, registry: new Registry() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidDefinitionError);
    expect((error as InvalidDefinitionError).errors.map((e) => e.path)).toEqual(['routes[0].to', 'routes[1].to']);
  });

  it('as a process: exits 1 printing one line per field of an invalid definition', async () => {
    const { code, stderr } = await runMain({
      CONTROL_PLANE_DEFINITION: bad,
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
    });
    expect(code).toBe(1);
    const lines = stderr.trim().split('\n');
    expect(lines[0]).toBe(`control-plane: invalid gateway definition ${bad}:`);
    expect(lines.slice(1).map((l) => l.trim().split(':')[0])).toEqual(['routes[0].to', 'routes[1].to']);
  }, 30_000);

  it('as a process: exits 2 naming CONTROL_PLANE_DEFINITION when it is missing', async () => {
    const { code, stderr } = await runMain({});
    expect(code).toBe(2);
    expect(stderr).toContain('CONTROL_PLANE_DEFINITION');
  }, 30_000);

  it('reads the cluster drain as a duration (10 s by default) and refuses one that is not', () => {
    const base = { CONTROL_PLANE_DEFINITION: 'gateway.yaml' };
    expect(configSchema.parse(base).CONTROL_PLANE_CLUSTER_DRAIN).toBe(10_000);
    expect(configSchema.parse({ ...base, CONTROL_PLANE_CLUSTER_DRAIN: '45s' }).CONTROL_PLANE_CLUSTER_DRAIN).toBe(
      45_000,
    );
    const refused = configSchema.safeParse({ ...base, CONTROL_PLANE_CLUSTER_DRAIN: 'soon' });
    expect(refused.success).toBe(false);
    expect(refused.error?.issues[0]?.path).toEqual(['CONTROL_PLANE_CLUSTER_DRAIN']);
  });

  it('as a process: exits 2 naming CONTROL_PLANE_HOST when it is not loopback and there is no TLS', async () => {
    const { code, stderr } = await runMain({ CONTROL_PLANE_DEFINITION: good, CONTROL_PLANE_HOST: '0.0.0.0' });
    expect(code).toBe(2);
    expect(stderr).toMatch(/CONTROL_PLANE_HOST: not a loopback address, and the control channel has no TLS/);
    expect(stderr).toContain('CONTROL_PLANE_ALLOW_INSECURE=true');
  }, 30_000);

  it('as a process: exits 2 naming CONTROL_PLANE_ADMIN_TOKEN_FILE when the admin host is not loopback and has no token', async () => {
    const { code, stderr } = await runMain({
      CONTROL_PLANE_DEFINITION: good,
      CONTROL_PLANE_HOST: '127.0.0.1',
      CONTROL_PLANE_ADMIN_HOST: '0.0.0.0',
    });
    expect(code).toBe(2);
    expect(stderr).toMatch(/CONTROL_PLANE_ADMIN_HOST: the admin server would listen on 0\.0\.0\.0/);
    expect(stderr).toContain('Set CONTROL_PLANE_ADMIN_TOKEN_FILE');
  }, 30_000);

  it('as a process: logs "control plane ready" and exits 0 on SIGTERM', async () => {
    let killed = false;
    const { code, stdout } = await runMain(
      { CONTROL_PLANE_DEFINITION: good, CONTROL_PLANE_XDS_PORT: '0', CONTROL_PLANE_ADMIN_PORT: '0' },
      (text, kill) => {
        if (!killed && text.includes('control plane ready')) {
          killed = true;
          kill();
        }
      },
    );
    const ready = stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((r) => r.message === 'control plane ready');
    expect(ready).toMatchObject({ level: 'INFO', service: 'control-plane', event_type: 'control_plane_ready' });
    expect(ready?.xds_port).toEqual(expect.any(Number));
    expect(stdout).toContain('"event_type":"shutdown_complete"');
    expect(code).toBe(0);
  }, 30_000);
});
