// Certificate rotation through the watcher: replacing the PEM files (in place, or the way a
// Kubernetes Secret volume swaps its `..data` symlink) serves the new Secret with no listener
// change; a broken pair keeps the last good one.
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DefinitionWatcher } from './watch';
import { SnapshotCache } from './xds/cache';
import { captureLogger, eventually, testDefinitionYaml } from './xds/test-helpers';
import { typeUrls } from './xds/type-urls';

const certs = resolve(import.meta.dirname, 'translate/testdata/tls');

const withHttps = (certFile: string, keyFile: string) =>
  testDefinitionYaml().replace(
    'http: { port: 18080 }',
    `http: { port: 18080 }\n  https: { port: 18443, certificates: [{ certFile: ${certFile}, keyFile: ${keyFile} }] }`,
  );

describe('DefinitionWatcher and certificate files', () => {
  let dir: string;
  let watcher: DefinitionWatcher | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-watch-tls-'));
  });
  afterEach(async () => {
    await watcher?.stop();
    watcher = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function startWatcher(definition: string) {
    const file = join(dir, 'gateway.yaml');
    await writeFile(file, definition);
    const cache = new SnapshotCache();
    const { logger } = captureLogger('info');
    watcher = new DefinitionWatcher({
      path: file,
      cache,
      logger,
      registry: new Registry(),
      debounceMs: 50,
      pollIntervalMs: 400,
    });
    const initial = await watcher.reload('initial');
    expect(initial.ok ? [] : initial.errors).toEqual([]);
    watcher.start();
    const servedCertificate = () => {
      const resource = cache.get(typeUrls.secret)?.resources.get('ingress_https_cert_0')?.resource;
      return resource && Secret.decode(resource.value).tlsCertificate?.certificateChain?.inlineString;
    };
    return { cache, servedCertificate, watcher };
  }

  const pem = (name: string) => readFile(join(certs, name), 'utf8');

  it('serves a certificate whose files were replaced, changing no listener', async () => {
    await mkdir(join(dir, 'tls'));
    await copyFile(join(certs, 'default.crt'), join(dir, 'tls/tls.crt'));
    await copyFile(join(certs, 'default.key'), join(dir, 'tls/tls.key'));
    const { cache, servedCertificate } = await startWatcher(withHttps('tls/tls.crt', 'tls/tls.key'));
    expect(servedCertificate()).toBe(await pem('default.crt'));
    const before = cache.versions();

    // Written one after the other, as a person or cert-manager without a symlink would.
    await writeFile(join(dir, 'tls/tls.crt'), await pem('api.crt'));
    await writeFile(join(dir, 'tls/tls.key'), await pem('api.key'));
    const expected = await pem('api.crt');
    await eventually(() => servedCertificate() === expected, 10_000, 'the new certificate served');
    expect(cache.versions()[typeUrls.listener]).toBe(before[typeUrls.listener]);
    expect(cache.versions()[typeUrls.route]).toBe(before[typeUrls.route]);
  });

  it("follows a Kubernetes Secret volume's ..data symlink swap", async () => {
    const version = async (name: string, cert: string) => {
      await mkdir(join(dir, name));
      await copyFile(join(certs, `${cert}.crt`), join(dir, name, 'tls.crt'));
      await copyFile(join(certs, `${cert}.key`), join(dir, name, 'tls.key'));
    };
    // The layout kubelet writes: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>.
    await version('..2026_12_01_v1', 'default');
    await symlink('..2026_12_01_v1', join(dir, '..data'));
    await symlink('..data/tls.crt', join(dir, 'tls.crt'));
    await symlink('..data/tls.key', join(dir, 'tls.key'));
    const { servedCertificate } = await startWatcher(withHttps('tls.crt', 'tls.key'));
    expect(servedCertificate()).toBe(await pem('default.crt'));

    await version('..2026_12_01_v2', 'api');
    await symlink('..2026_12_01_v2', join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    const expected = await pem('api.crt');
    await eventually(() => servedCertificate() === expected, 10_000, 'the swapped certificate served');
  });

  it('keeps serving the last good certificate while the new pair does not match, and says why', async () => {
    await mkdir(join(dir, 'tls'));
    await copyFile(join(certs, 'default.crt'), join(dir, 'tls/tls.crt'));
    await copyFile(join(certs, 'default.key'), join(dir, 'tls/tls.key'));
    const { servedCertificate, watcher } = await startWatcher(withHttps('tls/tls.crt', 'tls/tls.key'));
    const good = await pem('default.crt');

    await writeFile(join(dir, 'tls/tls.crt'), await pem('api.crt'));
    const last = await eventually(
      () => (watcher.status().lastReload?.result === 'invalid' ? watcher.status().lastReload : undefined),
      10_000,
      'the mismatched pair refused',
    );
    expect(last?.errors.map((e) => e.path)).toEqual(['listeners.https.certificates[0].keyFile']);
    expect(servedCertificate()).toBe(good);

    await writeFile(join(dir, 'tls/tls.key'), await pem('api.key'));
    const expected = await pem('api.crt');
    await eventually(() => servedCertificate() === expected, 10_000, 'the completed pair served');
  });
});
