// The listeners section: every broken certificate setup is refused with the field that names
// it (before Envoy could reject it or serve the wrong certificate), and a good one becomes the IR.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type CompileResult, compileDefinition } from '../definition/load';
import type { TlsFileSource } from './tls';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are mutated freely
type Def = any;

const testdata = resolve(import.meta.dirname, '../translate/testdata/tls');
const pem = (name: string) => readFileSync(resolve(testdata, name), 'utf8');

/** The test certificates under /tls, plus a few broken files. */
const files = new Map<string, string>([
  ['/tls/default.crt', pem('default.crt')],
  ['/tls/default.key', pem('default.key')],
  ['/tls/api.crt', pem('api.crt')],
  ['/tls/api.key', pem('api.key')],
  ['/tls/garbage.pem', 'this is not PEM\n'],
  ['/tls/truncated.crt', [...pem('default.crt').split('\n').slice(0, 4), '-----END CERTIFICATE-----', ''].join('\n')],
  ['/tls/chain-with-key.crt', pem('default.crt') + pem('default.key')],
]);
const source: TlsFileSource = {
  baseDir: '/tls',
  readFile: (path) => {
    const text = files.get(path);
    if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`);
    return text;
  },
};

function definition(): Def {
  return {
    listeners: {
      http: { port: 8080 },
      https: { port: 8443, certificates: [{ certFile: 'default.crt', keyFile: 'default.key' }] },
    },
    identity: { firebase: { projectId: 'demo-salon' }, groupClaim: 'tier', groups: { basic: ['read:own_profile'] } },
    policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
    services: { customer: { endpoints: ['127.0.0.1:3001'] } },
    routes: [{ match: 'GET /health', to: 'customer', auth: 'none' }],
  };
}

const compile = (change: (d: Def) => void): CompileResult => {
  const d = definition();
  change(d);
  return compileDefinition(d, { files: source });
};
const errorsOf = (result: CompileResult) => (result.ok ? [] : result.errors);
const cert = (d: Def, i = 0) => d.listeners.https.certificates[i];

const invalid: Array<{ name: string; change: (d: Def) => void; path: string; message: RegExp }> = [
  {
    name: 'a certificate file that does not exist',
    change: (d) => (cert(d).certFile = 'missing.crt'),
    path: 'listeners.https.certificates[0].certFile',
    message: /cannot read \/tls\/missing\.crt: ENOENT/,
  },
  {
    name: 'a key file that does not exist',
    change: (d) => (cert(d).keyFile = 'missing.key'),
    path: 'listeners.https.certificates[0].keyFile',
    message: /cannot read \/tls\/missing\.key/,
  },
  {
    name: 'a key that does not belong to the certificate',
    change: (d) => (cert(d).keyFile = 'api.key'),
    path: 'listeners.https.certificates[0].keyFile',
    message: /is not the private key of the certificate in \/tls\/default\.crt \(subject CN=default\.example\)/,
  },
  {
    name: 'a certificate file that is not PEM',
    change: (d) => (cert(d).certFile = 'garbage.pem'),
    path: 'listeners.https.certificates[0].certFile',
    message: /is not PEM/,
  },
  {
    name: 'a certificate whose PEM is cut short',
    change: (d) => (cert(d).certFile = 'truncated.crt'),
    path: 'listeners.https.certificates[0].certFile',
    message: /is not a valid certificate/,
  },
  {
    name: 'a key in the certificate file',
    change: (d) => (cert(d).certFile = 'chain-with-key.crt'),
    path: 'listeners.https.certificates[0].certFile',
    message: /is a "PRIVATE KEY", not a CERTIFICATE/,
  },
  {
    name: 'a certificate in the key file',
    change: (d) => (cert(d).keyFile = 'default.crt'),
    path: 'listeners.https.certificates[0].keyFile',
    message: /is not an unencrypted PEM private key/,
  },
  {
    name: 'a server name two certificates claim',
    change: (d) => {
      d.listeners.https.certificates = [
        { certFile: 'api.crt', keyFile: 'api.key', serverNames: ['api.example'] },
        // The same certificate again (a copy under another name): only the duplicate is wrong.
        { certFile: 'api.crt', keyFile: 'api.key', serverNames: ['www.api.example', 'api.example'] },
      ];
    },
    path: 'listeners.https.certificates[1].serverNames[1]',
    message: /"api\.example" is already served by listeners\.https\.certificates\[0\]/,
  },
  {
    name: 'two default certificates (neither has serverNames)',
    change: (d) => d.listeners.https.certificates.push({ certFile: 'api.crt', keyFile: 'api.key' }),
    path: 'listeners.https.certificates[1].serverNames',
    message: /is required: listeners\.https\.certificates\[0\] is already the default certificate/,
  },
  {
    name: 'a server name the certificate is not for',
    change: (d) => (cert(d).serverNames = ['default.example', 'api.example']),
    path: 'listeners.https.certificates[0].serverNames[1]',
    message:
      /"api\.example" is not a name of the certificate in \/tls\/default\.crt \(it is for DNS:default\.example\)/,
  },
  {
    name: 'a wildcard server name the certificate does not cover',
    change: (d) => (cert(d).serverNames = ['*.example']),
    path: 'listeners.https.certificates[0].serverNames[0]',
    message: /"\*\.example" is not a name of the certificate/,
  },
  {
    name: 'a server name that is not a DNS name',
    change: (d) => (cert(d).serverNames = ['API.example:443']),
    path: 'listeners.https.certificates[0].serverNames[0]',
    message: /lower-case DNS name/,
  },
  {
    name: 'the https port equal to the http port',
    change: (d) => (d.listeners.https.port = 8080),
    path: 'listeners.https.port',
    message: /is also listeners\.http\.port \(8080\)/,
  },
  {
    name: 'no certificate',
    change: (d) => (d.listeners.https.certificates = []),
    path: 'listeners.https.certificates',
    message: /at least 1 item/,
  },
  {
    name: 'a misspelt certificate field',
    change: (d) => (cert(d).cert = 'default.crt'),
    path: 'listeners.https.certificates[0].cert',
    message: /unknown field/,
  },
  {
    name: 'a redirect without an https listener',
    change: (d) => {
      delete d.listeners.https;
      d.listeners.http.redirectToHttps = true;
    },
    path: 'listeners.http.redirectToHttps',
    message: /no listeners\.https to redirect to/,
  },
  {
    name: 'exempt paths while not redirecting',
    change: (d) => {
      d.listeners.http.redirectToHttps = false;
      d.listeners.http.redirectExempt = ['/health'];
    },
    path: 'listeners.http.redirectExempt',
    message: /only applies while plain HTTP redirects/,
  },
  {
    name: 'an exempt path that is not a path',
    change: (d) => (d.listeners.http.redirectExempt = ['health']),
    path: 'listeners.http.redirectExempt[0]',
    message: /must be a path/,
  },
];

describe('listeners.https and the redirect', () => {
  it.each(invalid)('refuses $name at $path', ({ change, path, message }) => {
    const errors = errorsOf(compile(change));
    expect(errors.map((e) => e.path)).toEqual([path]);
    expect(errors[0]?.message).toMatch(message);
  });

  it('accepts the two listeners on one port at different addresses', () => {
    const result = compile((d) => {
      d.listeners.http = { address: '127.0.0.1', port: 8443 };
      d.listeners.https.address = '127.0.0.2';
    });
    expect(errorsOf(result)).toEqual([]);
  });

  it('reads the certificates relative to the definition, and redirects by default', () => {
    const result = compile((d) => {
      d.listeners.http.redirectExempt = ['/health', '/status/*'];
      d.listeners.https.certificates.unshift({ certFile: 'api.crt', keyFile: 'api.key', serverNames: ['api.example'] });
    });
    if (!result.ok) throw new Error(JSON.stringify(result.errors));
    expect(result.files).toEqual(['/tls/api.crt', '/tls/api.key', '/tls/default.crt', '/tls/default.key']);
    expect(result.ir.listener.httpsRedirect).toEqual({
      httpsPort: 8443,
      routeConfigName: 'ingress_http_redirect',
      exempt: [
        { kind: 'exact', value: '/health' },
        { kind: 'prefix', value: '/status/' },
      ],
    });
    expect(result.ir.https?.defaultSecretName).toBe('ingress_https_cert_1');
    expect(
      result.ir.https?.certificates.map((c) => ({ secret: c.secretName, names: c.serverNames, file: c.certFile })),
    ).toEqual([
      { secret: 'ingress_https_cert_0', names: ['api.example'], file: '/tls/api.crt' },
      { secret: 'ingress_https_cert_1', names: [], file: '/tls/default.crt' },
    ]);
    expect(result.ir.https?.certificates[0]?.certificateChainPem).toBe(pem('api.crt'));
  });

  it('lets the first certificate answer clients without a known name when every one has serverNames', () => {
    const result = compile((d) => (cert(d).serverNames = ['default.example']));
    expect(result.ok && result.ir.https?.defaultSecretName).toBe('ingress_https_cert_0');
  });

  it('keeps a definition with only listeners.http as it was: no redirect, no https', () => {
    const result = compile((d) => delete d.listeners.https);
    expect(result.ok && result.ir.listener.httpsRedirect).toBeUndefined();
    expect(result.ok && result.ir.https).toBeUndefined();
    expect(result.ok && result.files).toEqual([]);
  });

  it('names the certificate files even when the definition is refused for them (so they are watched)', () => {
    const result = compile((d) => (cert(d).keyFile = 'missing.key'));
    expect(result.ok).toBe(false);
    expect(result.files).toEqual(['/tls/default.crt', '/tls/missing.key']);
  });
});
