import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { devCertificateAuthorityFile } from './paths';
import { createCertificateAuthority, issueServerCertificate } from './tls-certs';

describe('tls-certs', () => {
  it('issues a server certificate for its names and addresses that its CA verifies', async () => {
    const ca = await createCertificateAuthority('Test CA');
    const server = await issueServerCertificate(ca, {
      commonName: 'localhost',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
    });
    const certificate = new X509Certificate(server.certificatePem);
    const authority = new X509Certificate(ca.certificatePem);
    expect(authority.ca).toBe(true);
    expect(certificate.ca).toBe(false);
    expect(certificate.verify(authority.publicKey)).toBe(true);
    expect(certificate.checkIssued(authority)).toBe(true);
    expect(certificate.checkHost('localhost')).toBe('localhost');
    expect(certificate.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(certificate.checkIP('::1')).toBe('::1');
    expect(certificate.checkHost('example.com')).toBeUndefined();
    expect(certificate.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // serverAuth
    expect(certificate.serialNumber.toLowerCase()).toBe(server.serialHex);
  });

  it("keeps npm start's committed development certificate valid for another 180 days", () => {
    const dir = dirname(devCertificateAuthorityFile);
    const certificate = new X509Certificate(readFileSync(join(dir, 'localhost.crt')));
    const authority = new X509Certificate(readFileSync(devCertificateAuthorityFile));
    expect(certificate.verify(authority.publicKey)).toBe(true);
    expect(certificate.checkIP('127.0.0.1')).toBe('127.0.0.1');
    const remainingDays = (Date.parse(certificate.validTo) - Date.now()) / 86_400_000;
    expect(remainingDays, 'control-plane/examples/dev-tls expires soon: run `npm run dev-cert`').toBeGreaterThan(180);
  });
});
