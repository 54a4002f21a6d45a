// `npm run dev-cert`: writes a new development CA and HTTPS certificate (for localhost,
// 127.0.0.1 and ::1) into control-plane/examples/dev-tls, the files the example definition
// serves. Run it when tls-certs.test.ts says the committed one is about to expire.
import { writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { devCertificateAuthorityFile } from '../paths';
import { createCertificateAuthority, issueServerCertificate } from '../tls-certs';

const dir = dirname(devCertificateAuthorityFile);
const ca = await createCertificateAuthority('Sekisho development CA');
const server = await issueServerCertificate(ca, {
  commonName: 'localhost',
  dnsNames: ['localhost'],
  ipAddresses: ['127.0.0.1', '::1'],
  validDays: 3650,
});
await writeFile(devCertificateAuthorityFile, ca.certificatePem);
await writeFile(join(dir, 'localhost.crt'), server.certificatePem);
await writeFile(join(dir, 'localhost.key'), server.privateKeyPem, { mode: 0o600 });
console.log(`development CA and certificate written to ${relative(process.cwd(), dir)}/`);
