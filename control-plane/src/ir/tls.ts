// Definition → the listener IR: the plain-HTTP listener, its redirect to HTTPS, and the https
// listener with its certificates. The PEM files are read here (through `TlsFileSource`, so
// tests and the compile entry points decide where from) and checked the way Envoy would
// check them, so a broken certificate is refused with its field path before Envoy sees it.
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import {
  ingressCertificateSecretName,
  ingressHttpsListenerName,
  ingressListenerName,
  ingressRedirectRouteConfigName,
  ingressRouteConfigName,
} from './names';
import type { CertificateIR, HttpsListenerIR, HttpsRedirectIR, ListenerIR } from './types';

export interface TlsFileSource {
  /** Relative certFile/keyFile paths are resolved against it: the definition file's directory. */
  baseDir: string;
  /** Reads a whole file as UTF-8; throws when it cannot. */
  readFile(absolutePath: string): string;
}

export const fileSystemSource = (baseDir: string = process.cwd()): TlsFileSource => ({
  baseDir,
  readFile: (path) => readFileSync(path, 'utf8'),
});

type Listeners = GatewayDefinition['listeners'];

/** Absolute paths of every certificate and key file the definition names (what to watch). */
export function certificateFiles(listeners: Listeners, baseDir: string): string[] {
  return (listeners.https?.certificates ?? []).flatMap((c) => [
    resolve(baseDir, c.certFile),
    resolve(baseDir, c.keyFile),
  ]);
}

export function buildListeners(
  listeners: Listeners,
  source: TlsFileSource,
  errors: FieldError[],
): { listener: ListenerIR; https: HttpsListenerIR | undefined } {
  const { http, https } = listeners;
  if (https && http.port === https.port && overlap(http.address, https.address)) {
    errors.push({
      path: 'listeners.https.port',
      message: `is also listeners.http.port (${http.port}) on an overlapping address; the two listeners need different ports`,
    });
  }
  const redirecting = http.redirectToHttps ?? https !== undefined;
  if (redirecting && !https) {
    errors.push({ path: 'listeners.http.redirectToHttps', message: 'there is no listeners.https to redirect to' });
  }
  if (!redirecting && http.redirectExempt.length > 0) {
    errors.push({
      path: 'listeners.http.redirectExempt',
      message: 'only applies while plain HTTP redirects to HTTPS (listeners.https with redirectToHttps not false)',
    });
  }
  const httpsRedirect: HttpsRedirectIR | undefined =
    redirecting && https
      ? {
          httpsPort: https.port,
          routeConfigName: ingressRedirectRouteConfigName,
          exempt: http.redirectExempt.map((path) =>
            path.endsWith('/*') ? { kind: 'prefix', value: path.slice(0, -1) } : { kind: 'exact', value: path },
          ),
        }
      : undefined;

  return {
    listener: {
      name: ingressListenerName,
      routeConfigName: ingressRouteConfigName,
      address: http.address,
      port: http.port,
      httpsRedirect,
    },
    https: https && httpsListener(https, source, errors),
  };
}

function httpsListener(
  https: NonNullable<Listeners['https']>,
  source: TlsFileSource,
  errors: FieldError[],
): HttpsListenerIR {
  const at = 'listeners.https.certificates';
  const certificates = https.certificates.map((input, index) =>
    certificate(input, index, `${at}[${index}]`, source, errors),
  );

  // Envoy refuses two filter chains with the same server name, and two defaults would be two
  // chains with the same (empty) match: say which certificate already has it.
  const owner = new Map<string, number>();
  for (const [index, input] of https.certificates.entries()) {
    for (const [nameIndex, name] of (input.serverNames ?? []).entries()) {
      const first = owner.get(name);
      if (first !== undefined) {
        errors.push({
          path: `${at}[${index}].serverNames[${nameIndex}]`,
          message: `"${name}" is already served by ${at}[${first}]`,
        });
      } else owner.set(name, index);
    }
  }
  const defaults = https.certificates.flatMap((input, index) => (input.serverNames ? [] : [index]));
  for (const index of defaults.slice(1)) {
    errors.push({
      path: `${at}[${index}].serverNames`,
      message: `is required: ${at}[${defaults[0]}] is already the default certificate (the one without serverNames)`,
    });
  }

  return {
    name: ingressHttpsListenerName,
    routeConfigName: ingressRouteConfigName,
    address: https.address,
    port: https.port,
    certificates,
    // Without a certificate lacking serverNames, the first one also answers everyone else.
    defaultSecretName: ingressCertificateSecretName(defaults[0] ?? 0),
  };
}

function certificate(
  input: NonNullable<Listeners['https']>['certificates'][number],
  index: number,
  at: string,
  source: TlsFileSource,
  errors: FieldError[],
): CertificateIR {
  const certFile = resolve(source.baseDir, input.certFile);
  const keyFile = resolve(source.baseDir, input.keyFile);
  const certificateChainPem = read(source, certFile, `${at}.certFile`, errors);
  const privateKeyPem = read(source, keyFile, `${at}.keyFile`, errors);

  const leaf = certificateChainPem === undefined ? undefined : parseCertificate(certificateChainPem, at, errors);
  const key = privateKeyPem === undefined ? undefined : parsePrivateKey(privateKeyPem, at, errors);
  if (leaf && key && !leaf.checkPrivateKey(key)) {
    errors.push({
      path: `${at}.keyFile`,
      message: `${keyFile} is not the private key of the certificate in ${certFile} (subject ${leaf.subject.replace(/\n/g, ', ')})`,
    });
  }
  // A name the certificate does not cover would be served a certificate every client refuses.
  for (const [nameIndex, name] of (input.serverNames ?? []).entries()) {
    if (leaf && !covers(leaf, name)) {
      errors.push({
        path: `${at}.serverNames[${nameIndex}]`,
        message: `"${name}" is not a name of the certificate in ${certFile} (it is for ${leaf.subjectAltName ?? leaf.subject.replace(/\n/g, ', ')})`,
      });
    }
  }
  return {
    secretName: ingressCertificateSecretName(index),
    serverNames: input.serverNames ?? [],
    certFile,
    keyFile,
    certificateChainPem: certificateChainPem ?? '',
    privateKeyPem: privateKeyPem ?? '',
  };
}

function read(source: TlsFileSource, path: string, at: string, errors: FieldError[]): string | undefined {
  try {
    return source.readFile(path);
  } catch (error) {
    errors.push({
      path: at,
      message: `cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`,
    });
    return undefined;
  }
}

const pemBlock = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+-----END \1-----/g;

/** Every block must be a certificate that parses (Envoy loads the whole chain); returns the first. */
function parseCertificate(pem: string, at: string, errors: FieldError[]): X509Certificate | undefined {
  const blocks = [...pem.matchAll(pemBlock)];
  const problem = (message: string) => {
    errors.push({ path: `${at}.certFile`, message });
    return undefined;
  };
  if (blocks.length === 0) return problem('is not PEM: no "-----BEGIN CERTIFICATE-----" block');
  const parsed: X509Certificate[] = [];
  for (const [position, block] of blocks.entries()) {
    if (block[1] !== 'CERTIFICATE') {
      return problem(`PEM block ${position + 1} is a "${block[1]}", not a CERTIFICATE (is the key in certFile?)`);
    }
    try {
      parsed.push(new X509Certificate(block[0]));
    } catch (error) {
      return problem(`PEM block ${position + 1} is not a valid certificate: ${describe(error)}`);
    }
  }
  return parsed[0];
}

function parsePrivateKey(pem: string, at: string, errors: FieldError[]): KeyObject | undefined {
  if (!/-----BEGIN (?:RSA |EC )?PRIVATE KEY-----/.test(pem)) {
    errors.push({
      path: `${at}.keyFile`,
      message: 'is not an unencrypted PEM private key (no "-----BEGIN PRIVATE KEY-----" block)',
    });
    return undefined;
  }
  try {
    return createPrivateKey({ key: pem, format: 'pem' });
  } catch (error) {
    errors.push({ path: `${at}.keyFile`, message: `is not a valid private key: ${describe(error)}` });
    return undefined;
  }
}

/** A wildcard name ("*.example.com") is covered when the certificate matches any one-label name under it. */
function covers(certificate: X509Certificate, serverName: string): boolean {
  const probe = serverName.startsWith('*.') ? `sekisho-sni-probe${serverName.slice(1)}` : serverName;
  return certificate.checkHost(probe) !== undefined;
}

/** Whether two listen addresses can take the same connections (a wildcard takes every address). */
function overlap(a: string, b: string): boolean {
  const wildcard = (address: string) => address === '0.0.0.0' || address === '::';
  return a === b || wildcard(a) || wildcard(b);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
