import { createPrivateKey, X509Certificate } from 'node:crypto';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { ConfigError } from '@sekisho/service-kit/config';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Resource } from '../xds/resources';
import { captureLogger } from '../xds/test-helpers';
import { MeshCa, type Schedule } from './ca';
import { type CaSource, loadCaMaterial } from './ca-material';
import { meshSecretNames, spiffeIdOf } from './contract';
import { parseSpiffeId } from './spiffe';
import { createTestCa, opensslVerify, type TestCa } from './test-ca';

const minute = 60_000;
const hour = 60 * minute;
const decode = (resource: Resource | undefined) => Secret.decode(resource?.resource.value ?? new Uint8Array());
const pemBlocks = (text: string) =>
  text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
const certOf = (file: string) => new X509Certificate(readFileSync(file));
const customer = spiffeIdOf('cluster.local', 'salon', 'customer');

/** A clock the test moves, and a schedule that runs what is due when the clock is moved. */
function fakeTime(start = Math.floor(Date.now() / 1000) * 1000) {
  let now = start;
  const timers: Array<{ at: number; run: () => void; cancelled: boolean }> = [];
  const schedule: Schedule = (delayMs, run) => {
    const timer = { at: now + delayMs, run, cancelled: false };
    timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  };
  return {
    now: () => now,
    schedule,
    pending: () => timers.filter((t) => !t.cancelled).map((t) => t.at - now),
    advance(ms: number) {
      now += ms;
      for (const timer of timers.splice(0)) {
        if (timer.cancelled) continue;
        if (timer.at <= now) timer.run();
        else timers.push(timer);
      }
    },
  };
}

describe('MeshCa', () => {
  let dir: string;
  let ca: TestCa;
  let rsa: TestCa;
  let files: CaSource;
  const create = (opts: Partial<ConstructorParameters<typeof MeshCa>[0]> = {}) => {
    const { logger, records } = captureLogger('debug');
    const registry = new Registry();
    const mesh = new MeshCa({
      source: files,
      trustDomain: 'cluster.local',
      logger,
      registry,
      pollIntervalMs: 0,
      ...opts,
    });
    return { mesh, records, registry };
  };
  const metric = async (registry: Registry, name: string, labels: Record<string, string> = {}) =>
    (await registry.getSingleMetric(name)?.get())?.values.find((v) =>
      Object.entries(labels).every(([k, value]) => v.labels[k] === value),
    )?.value;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mesh-ca-'));
    ca = createTestCa(join(dir, 'ec'));
    rsa = createTestCa(join(dir, 'rsa'), { intermediateKey: 'rsa' });
    files = { kind: 'files', certFile: ca.cert, keyFile: ca.key, bundleFile: ca.rootCert };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  describe('a workload certificate', () => {
    it('issued at any millisecond of a long-lived CA warns of nothing (notAfter is whole seconds)', () => {
      const time = fakeTime(Math.floor(Date.now() / 1000) * 1000 + 737);
      const { mesh, records } = create({ now: time.now, schedule: time.schedule, ttlMs: hour });
      mesh.secretsFor(customer);
      expect(records.filter((r) => r.level === 'WARN')).toEqual([]);
      mesh.close();
    });

    it('carries the SPIFFE id as its only SAN, for TLS client and server, valid for the TTL from a backdated start', () => {
      const time = fakeTime();
      const { mesh } = create({ now: time.now, schedule: time.schedule, ttlMs: hour, backdateMs: 2 * minute });
      const [certificate, bundle] = mesh.secretsFor(customer);
      expect(certificate?.name).toBe(meshSecretNames.certificate);
      const secret = decode(certificate);
      expect(secret.name).toBe(meshSecretNames.certificate);
      const chainPem = secret.tlsCertificate?.certificateChain?.inlineString ?? '';
      const [leafPem, intermediatePem, ...rest] = pemBlocks(chainPem);
      expect(rest).toEqual([]);
      const leaf = new X509Certificate(leafPem ?? '');
      const intermediate = new X509Certificate(intermediatePem ?? '');
      expect(intermediate.fingerprint256).toBe(certOf(ca.cert).fingerprint256);
      expect(leaf.subjectAltName).toBe(`URI:${customer}`);
      expect(leaf.subject ?? '').toBe('');
      expect(leaf.ca).toBe(false);
      expect(leaf.keyUsage?.sort()).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
      expect(new Date(leaf.validFrom).getTime()).toBe(time.now() - 2 * minute);
      expect(new Date(leaf.validTo).getTime()).toBe(time.now() + hour);
      expect(leaf.checkIssued(intermediate) && leaf.verify(intermediate.publicKey)).toBe(true);
      expect(mesh.current(customer)?.serialNumber).toBe(leaf.serialNumber);
      const key = createPrivateKey(secret.tlsCertificate?.privateKey?.inlineString ?? '');
      expect([key.asymmetricKeyType, key.asymmetricKeyDetails?.namedCurve]).toEqual(['ec', 'prime256v1']);
      expect(leaf.checkPrivateKey(key)).toBe(true);
      expect(bundle?.name).toBe(meshSecretNames.trustBundle);
      const trusted = decode(bundle).validationContext?.trustedCa?.inlineString ?? '';
      expect(pemBlocks(trusted).map((p) => new X509Certificate(p).fingerprint256)).toEqual([
        certOf(ca.rootCert).fingerprint256,
      ]);
      mesh.close();
    });

    it.each([
      ['an ECDSA P-256 intermediate', () => ca],
      ['an RSA intermediate', () => rsa],
    ])('signed by %s, verifies with openssl for TLS clients and servers', (_name, which) => {
      const testCa = which();
      const { mesh } = create({
        source: { kind: 'directory', dir: testCa.secretDir },
      });
      const chain = decode(mesh.secretsFor(customer)[0]).tlsCertificate?.certificateChain?.inlineString ?? '';
      expect(opensslVerify(testCa.dir, chain, testCa.rootCert, 'sslclient')).toContain('OK');
      expect(opensslVerify(testCa.dir, chain, testCa.rootCert, 'sslserver')).toContain('OK');
      // Another mesh's root does not accept it.
      const other = testCa === ca ? rsa : ca;
      expect(() => opensslVerify(testCa.dir, chain, other.rootCert)).toThrow();
      mesh.close();
    });

    it('never outlives its CA', () => {
      const caNotAfter = new Date(certOf(ca.cert).validTo).getTime();
      const time = fakeTime(caNotAfter - 10 * minute);
      const { mesh, records } = create({ now: time.now, schedule: time.schedule, ttlMs: hour });
      expect(mesh.current(customer)).toBeUndefined();
      mesh.secretsFor(customer);
      expect(mesh.current(customer)?.notAfter.getTime()).toBe(Math.floor(caNotAfter / 1000) * 1000);
      expect(records.find((r) => r.event_type === 'mesh_ca_expiring')?.level).toBe('WARN');
      // Renewed at half of what is left, and, once the CA has expired, no more than once a minute.
      expect(time.pending()).toEqual([caNotAfter - time.now() - 5 * minute]);
      mesh.onRotation(() => mesh.secretsFor(customer));
      time.advance(20 * minute);
      expect(time.pending()).toEqual([minute]);
      mesh.close();
    });
  });

  it.each([
    ['spiffe://cluster.local/ns/salon/sa/customer/extra', 'exactly the path'],
    ['spiffe://cluster.local/ns/Salon/sa/customer', 'namespace "Salon"'],
    ['spiffe://cluster.local/ns/salon/sa/-customer', 'service account "-customer"'],
    ['spiffe://Cluster.Local/ns/salon/sa/customer', 'trust domain'],
    ['spiffe://cluster.local/ns//sa/customer', 'namespace ""'],
    ['https://cluster.local/ns/salon/sa/customer', 'exactly the path'],
    ['spiffe://other.domain/ns/salon/sa/customer', 'for the trust domain cluster.local only'],
  ])('refuses to issue for %s', (id, reason) => {
    const { mesh } = create();
    expect(() => mesh.secretsFor(id)).toThrow(reason);
    expect(mesh.identities()).toEqual([]);
    mesh.close();
  });

  it('parses a workload SPIFFE id', () => {
    expect(parseSpiffeId('spiffe://prod.example.com/ns/salon-1/sa/appointment')).toEqual({
      trustDomain: 'prod.example.com',
      namespace: 'salon-1',
      serviceAccount: 'appointment',
    });
  });

  describe('rotation', () => {
    it('returns the same certificate until half its lifetime, then tells the listeners and issues a new one', async () => {
      const time = fakeTime();
      const { mesh, registry } = create({ now: time.now, schedule: time.schedule, ttlMs: hour, renewAt: 0.5 });
      let rotations = 0;
      const served: string[] = [];
      // What main.ts does: serve the views again, which ask for every identity they still name.
      mesh.onRotation(() => {
        rotations++;
        mesh.secretsFor(customer);
        served.push(mesh.current(customer)?.serialNumber ?? '');
      });
      const first = mesh.secretsFor(customer);
      const serial = mesh.current(customer)?.serialNumber;
      expect(time.pending()).toEqual([30 * minute]);
      time.advance(29 * minute);
      expect(mesh.secretsFor(customer)).toEqual(first);
      expect(rotations).toBe(0);
      time.advance(minute);
      expect(rotations).toBe(1);
      expect(served[0]).not.toBe(serial);
      expect(mesh.secretsFor(customer)[0]).not.toEqual(first[0]);
      expect(mesh.secretsFor(customer)[1]).toEqual(first[1]);
      time.advance(30 * minute);
      expect(rotations).toBe(2);
      expect(new Set([serial, ...served]).size).toBe(3);
      expect(await metric(registry, 'sekisho_mesh_certificates_issued_total')).toBe(3);
      expect(await metric(registry, 'sekisho_mesh_certificate_rotations_total', { reason: 'expiry' })).toBe(2);
      expect(await metric(registry, 'sekisho_mesh_certificate_earliest_expiry_seconds')).toBe(3600);
      mesh.close();
    });

    it('forgets an identity nobody asks for after its rotation, and keeps no timer for it', async () => {
      const time = fakeTime();
      const { mesh, registry } = create({ now: time.now, schedule: time.schedule, ttlMs: hour });
      let rotations = 0;
      mesh.onRotation(() => rotations++);
      mesh.secretsFor(customer);
      mesh.secretsFor(spiffeIdOf('cluster.local', 'salon', 'appointment'));
      expect(mesh.identities().sort()).toEqual([spiffeIdOf('cluster.local', 'salon', 'appointment'), customer]);
      time.advance(30 * minute);
      expect(rotations).toBe(1);
      expect(mesh.identities()).toEqual([]);
      expect(time.pending()).toEqual([]);
      expect(await metric(registry, 'sekisho_mesh_certificate_earliest_expiry_seconds')).toBeNaN();
      mesh.close();
    });

    it('re-issues everything with a new CA when the files change, and keeps the last good CA when they break', async () => {
      const live = join(dir, 'live');
      const next = createTestCa(join(dir, 'next'), { name: 'next' });
      createTestCa(live, { name: 'live' });
      const secret = join(live, 'live-secret');
      const { mesh, records, registry } = create({ source: { kind: 'directory', dir: secret } });
      let rotations = 0;
      mesh.onRotation(() => rotations++);
      mesh.secretsFor(customer);
      const issuerOf = () =>
        new X509Certificate(
          pemBlocks(decode(mesh.secretsFor(customer)[0]).tlsCertificate?.certificateChain?.inlineString ?? '')[0] ?? '',
        ).issuer;
      expect(issuerOf()).toContain('live intermediate');

      // A half-done update: the new certificate with the old key.
      copyFileSync(join(next.secretDir, 'tls.crt'), join(secret, 'tls.crt'));
      expect(mesh.reloadCa()).toBe(false);
      expect(rotations).toBe(0);
      expect(issuerOf()).toContain('live intermediate');
      expect(records.find((r) => r.event_type === 'mesh_ca_invalid')?.error_details).toContain(
        'CONTROL_PLANE_MESH_CA_DIR (tls.key)',
      );
      expect(await metric(registry, 'sekisho_mesh_ca_load_errors_total')).toBe(1);

      copyFileSync(join(next.secretDir, 'tls.key'), join(secret, 'tls.key'));
      copyFileSync(join(next.secretDir, 'ca.crt'), join(secret, 'ca.crt'));
      expect(mesh.reloadCa()).toBe(true);
      expect(rotations).toBe(1);
      expect(issuerOf()).toContain('next intermediate');
      const trusted = decode(mesh.secretsFor(customer)[1]).validationContext?.trustedCa?.inlineString ?? '';
      expect(new X509Certificate(trusted).fingerprint256).toBe(certOf(next.rootCert).fingerprint256);
      expect(await metric(registry, 'sekisho_mesh_certificate_rotations_total', { reason: 'ca_changed' })).toBe(1);
      mesh.close();
    });

    it('notices changed CA files by polling', async () => {
      const live = join(dir, 'polled');
      const next = createTestCa(join(dir, 'polled-next'), { name: 'next' });
      createTestCa(live, { name: 'polled' });
      const secret = join(live, 'polled-secret');
      const { mesh } = create({ source: { kind: 'directory', dir: secret }, pollIntervalMs: 50 });
      const rotated = new Promise<void>((resolve) => mesh.onRotation(resolve));
      for (const file of ['tls.key', 'ca.crt', 'tls.crt']) copyFileSync(join(next.secretDir, file), join(secret, file));
      await rotated;
      mesh.close();
    });
    it("follows a Kubernetes Secret volume's ..data symlink swap", async () => {
      // The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/, swapped by a rename.
      const volume = join(dir, 'volume');
      const first = createTestCa(join(dir, 'volume-first'), { name: 'first' });
      const second = createTestCa(join(dir, 'volume-second'), { name: 'second' });
      mkdirSync(volume);
      for (const [name, from] of [
        ['..2026_a', first],
        ['..2026_b', second],
      ] as const) {
        mkdirSync(join(volume, name));
        for (const file of ['tls.crt', 'tls.key', 'ca.crt'])
          copyFileSync(join(from.secretDir, file), join(volume, name, file));
      }
      symlinkSync('..2026_a', join(volume, '..data'));
      for (const file of ['tls.crt', 'tls.key', 'ca.crt']) symlinkSync(join('..data', file), join(volume, file));
      const { mesh } = create({ source: { kind: 'directory', dir: volume }, pollIntervalMs: 50 });
      const issuer = () =>
        new X509Certificate(
          pemBlocks(decode(mesh.secretsFor(customer)[0]).tlsCertificate?.certificateChain?.inlineString ?? '')[0] ?? '',
        ).issuer;
      expect(issuer()).toContain('first intermediate');
      const rotated = new Promise<void>((resolve) => mesh.onRotation(resolve));
      symlinkSync('..2026_b', join(volume, '..data_tmp'));
      renameSync(join(volume, '..data_tmp'), join(volume, '..data'));
      await rotated;
      expect(issuer()).toContain('second intermediate');
      mesh.close();
    });
  });

  describe('refuses an unusable CA at start-up, naming the variable', () => {
    it.each([
      [
        'a key that is not the certificate’s',
        () => ({ ...files, keyFile: rsa.key }),
        'CONTROL_PLANE_MESH_CA_KEY_FILE',
        'is not the private key of',
      ],
      [
        'a certificate that is not a CA',
        () => {
          const notCa = createTestCa(join(dir, 'not-ca'), { section: 'not_a_ca' });
          return { kind: 'files', certFile: notCa.cert, keyFile: notCa.key, bundleFile: notCa.rootCert } as const;
        },
        'CONTROL_PLANE_MESH_CA_CERT_FILE',
        'is not a CA certificate',
      ],
      [
        'a CA without keyCertSign',
        () => {
          const noSign = createTestCa(join(dir, 'no-sign'), { section: 'no_cert_sign' });
          return { kind: 'files', certFile: noSign.cert, keyFile: noSign.key, bundleFile: noSign.rootCert } as const;
        },
        'CONTROL_PLANE_MESH_CA_CERT_FILE',
        'keyCertSign',
      ],
      [
        'a bundle the CA does not chain to',
        () => ({ ...files, bundleFile: rsa.rootCert }),
        'CONTROL_PLANE_MESH_CA_BUNDLE_FILE',
        'does not chain',
      ],
      [
        'a missing file',
        () => ({ ...files, bundleFile: join(dir, 'nope.crt') }),
        'CONTROL_PLANE_MESH_CA_BUNDLE_FILE',
        'ENOENT',
      ],
      [
        'a key file that is no key',
        () => ({ ...files, keyFile: ca.cert }),
        'CONTROL_PLANE_MESH_CA_KEY_FILE',
        'not an unencrypted PEM private key',
      ],
      [
        'a directory without ca.crt',
        () => {
          const broken = join(dir, 'no-bundle');
          createTestCa(broken, { name: 'nb' });
          rmSync(join(broken, 'nb-secret', 'ca.crt'));
          return { kind: 'directory', dir: join(broken, 'nb-secret') } as const;
        },
        'CONTROL_PLANE_MESH_CA_DIR (ca.crt)',
        'ENOENT',
      ],
    ] as const)('%s', (_name, source, variable, message) => {
      let error: unknown;
      try {
        loadCaMaterial(source() as CaSource);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      const problem = (error as ConfigError).problems.find((p) => p.variable === variable);
      expect(problem?.message).toContain(message);
      expect((error as ConfigError).message).not.toContain('PRIVATE KEY');
    });

    it('an expired CA', () => {
      const notAfter = new Date(certOf(ca.cert).validTo).getTime();
      expect(() => create({ now: () => notAfter + 1_000 })).toThrow(/CONTROL_PLANE_MESH_CA_CERT_FILE: .* expired at/);
    });
  });

  it('writes no private key to the log, the CA’s nor a workload’s', () => {
    const time = fakeTime();
    const { mesh, records } = create({ now: time.now, schedule: time.schedule, ttlMs: hour });
    mesh.onRotation(() => mesh.secretsFor(customer));
    const keys = [decode(mesh.secretsFor(customer)[0]).tlsCertificate?.privateKey?.inlineString ?? ''];
    time.advance(30 * minute);
    keys.push(decode(mesh.secretsFor(customer)[0]).tlsCertificate?.privateKey?.inlineString ?? '');
    writeFileSync(join(dir, 'broken.key'), 'not a key');
    expect(() => loadCaMaterial({ ...files, keyFile: join(dir, 'broken.key') } as CaSource)).toThrow();
    const log = JSON.stringify(records);
    expect(records.some((r) => r.event_type === 'mesh_certificate_issued')).toBe(true);
    expect(log).not.toMatch(/PRIVATE KEY/);
    const caKeyBody = createPrivateKey(readFileSync(ca.key)).export({ type: 'pkcs8', format: 'der' });
    for (const body of [...keys.map((k) => k.split('\n')[1] ?? ''), caKeyBody.toString('base64').slice(0, 40)]) {
      expect(body.length).toBeGreaterThan(20);
      expect(log).not.toContain(body.slice(0, 20));
    }
    mesh.close();
  });
});
