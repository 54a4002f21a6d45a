import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, spawnProcess } from '@sekisho/devstack/processes';
import { createCertificateAuthority, issueServerCertificate } from '@sekisho/devstack/tls-certs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// main.ts as an operator (or the image's entrypoint) runs it: `npx tsx injector/src/main.ts`.

const main = fileURLToPath(new URL('./main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));

let dir: string;
let caPem: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-injector-main-'));
  const ca = await createCertificateAuthority('injector main test CA');
  caPem = ca.certificatePem;
  const pair = await issueServerCertificate(ca, { commonName: 'injector', ipAddresses: ['127.0.0.1'] });
  await writeFile(join(dir, 'tls.crt'), pair.certificatePem);
  await writeFile(join(dir, 'tls.key'), pair.privateKeyPem);
  // The control channel CA csi mode (the default) inlines in every sidecar bootstrap.
  await writeFile(join(dir, 'xds-ca.crt'), (await createCertificateAuthority('control channel CA')).certificatePem);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('main.ts', () => {
  it('stops with exit code 2 and names the variable when configuration is invalid', async () => {
    const proc = spawnProcess({
      name: 'injector',
      command: tsx,
      args: [main],
      env: { ...process.env, INJECTOR_TLS_KEY_FILE: join(dir, 'tls.key') },
      reportUnexpectedExit: false,
    });
    expect((await proc.exited).code).toBe(2);
    expect(proc.logs()).toContain('INJECTOR_TLS_CERT_FILE: required: path of the PEM certificate');
  });

  it('stops with exit code 1 naming the file when the certificate cannot be read', async () => {
    const proc = spawnProcess({
      name: 'injector',
      command: tsx,
      args: [main],
      env: {
        ...process.env,
        INJECTOR_PORT: '0',
        INJECTOR_ADMIN_PORT: '0',
        INJECTOR_TLS_CERT_FILE: join(dir, 'missing.crt'),
        INJECTOR_TLS_KEY_FILE: join(dir, 'tls.key'),
        INJECTOR_XDS_CA_FILE: join(dir, 'xds-ca.crt'),
      },
      reportUnexpectedExit: false,
    });
    expect((await proc.exited).code).toBe(1);
    expect(proc.logs()).toContain(`INJECTOR_TLS_CERT_FILE: cannot read ${join(dir, 'missing.crt')}`);
  });

  it('serves the webhook and the admin port, then exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const adminPort = await freePort();
    const proc = spawnProcess({
      name: 'injector',
      command: tsx,
      args: [main],
      env: {
        ...process.env,
        INJECTOR_PORT: String(port),
        INJECTOR_ADMIN_PORT: String(adminPort),
        INJECTOR_TLS_CERT_FILE: join(dir, 'tls.crt'),
        INJECTOR_TLS_KEY_FILE: join(dir, 'tls.key'),
        INJECTOR_XDS_CA_FILE: join(dir, 'xds-ca.crt'),
        LOG_LEVEL: 'info',
      },
      // It is meant to exit: on the SIGTERM below.
      reportUnexpectedExit: false,
    });
    try {
      await proc.waitForHttp(`http://127.0.0.1:${adminPort}/readyz`, 30_000);
      const review = {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: 'u-1',
          kind: { group: '', version: 'v1', kind: 'Pod' },
          resource: { group: '', version: 'v1', resource: 'pods' },
          namespace: 'shop',
          operation: 'CREATE',
          object: { metadata: { labels: { app: 'customer' } }, spec: { containers: [{ name: 'app', image: 'a' }] } },
        },
      };
      const answer = await new Promise<{ response: { uid: string; allowed: boolean; patchType?: string } }>(
        (resolve, reject) => {
          const req = request(
            {
              host: '127.0.0.1',
              port,
              method: 'POST',
              path: '/inject',
              ca: caPem,
              headers: { 'content-type': 'application/json' },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString())));
            },
          );
          req.on('error', reject);
          req.end(JSON.stringify(review));
        },
      );
      expect(answer.response).toMatchObject({ uid: 'u-1', allowed: true, patchType: 'JSONPatch' });
      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      expect(metrics).toContain('sekisho_injector_reviews_total{outcome="injected",service="injector"} 1');
      expect(metrics).toMatch(/sekisho_injector_certificate_expiry_timestamp_seconds\{service="injector"\} \d{10}/);
    } finally {
      proc.signal('SIGTERM');
    }
    const exit = await proc.exited;
    expect(exit.code).toBe(0);
    expect(proc.logs()).toContain('"event_type":"admission_injected"');
  });
});
