import { X509Certificate } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createControlChannelCertificates } from '@sekisho/devstack/control-channel-certs';
import { createCertificateAuthority } from '@sekisho/devstack/tls-certs';
import { ConfigError } from '@sekisho/service-kit/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureLogger, eventually } from '../xds/test-helpers';
import { createServerTls, readServerTls, type ServerTlsFiles } from './server-tls';

// The control channel's TLS material with a mesh CA: the handshake trusts the client CA and the
// mesh trust bundle, but only the client CA's certificates sign channel identities.

let dir: string;
let files: ServerTlsFiles;
let channelCaPem: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-server-tls-'));
  const certs = await createControlChannelCertificates(join(dir, 'channel'), { clients: [] });
  files = { certFile: certs.controlPlane.certFile, keyFile: certs.controlPlane.keyFile, clientCaFile: certs.caFile };
  channelCaPem = certs.ca.certificatePem;
  await writeFile(join(dir, 'mesh-ca.crt'), (await createCertificateAuthority('mesh root')).certificatePem);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const bundle = () => ({ file: join(dir, 'mesh-ca.crt'), variable: 'CONTROL_PLANE_MESH_CA_DIR (ca.crt)' });

describe('the control channel with the mesh trust bundle', () => {
  it('trusts both in the handshake, and names only the client CA as the channel authority', () => {
    const material = readServerTls(files, bundle());
    const trusted = material.ca.toString().match(/-----BEGIN CERTIFICATE-----/g) ?? [];
    expect(trusted).toHaveLength(2);
    expect(material.channelAuthorities.map((ca) => ca.fingerprint256)).toEqual([
      new X509Certificate(channelCaPem).fingerprint256,
    ]);
  });

  it('refuses a mesh bundle without a certificate, naming where it comes from', async () => {
    const empty = join(dir, 'empty.crt');
    await writeFile(empty, 'not a certificate\n');
    let error: unknown;
    try {
      readServerTls(files, { file: empty, variable: 'CONTROL_PLANE_MESH_CA_BUNDLE_FILE' });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(String((error as Error).message)).toMatch(/CONTROL_PLANE_MESH_CA_BUNDLE_FILE.*no PEM certificate/);
  });

  it('re-reads a changed mesh bundle (a root added for a rotation) with no restart', async () => {
    const { logger, records } = captureLogger('info');
    const tls = createServerTls(files, { logger, pollIntervalMs: 50, meshBundle: bundle() });
    try {
      const [first, second] = await Promise.all([
        createCertificateAuthority('mesh root'),
        createCertificateAuthority('next mesh root'),
      ]);
      await writeFile(join(dir, 'mesh-ca.tmp'), `${first.certificatePem}${second.certificatePem}`);
      await rename(join(dir, 'mesh-ca.tmp'), join(dir, 'mesh-ca.crt'));
      await eventually(
        () => records.some((r) => r.event_type === 'control_channel_certificate_reloaded'),
        10_000,
        'the reload',
      );
      expect(tls.channelAuthorities()).toHaveLength(1);
    } finally {
      tls.close();
    }
  });
});
