// The TLS translators: what Envoy gets for certificates (SDS Secrets with the files' PEM text)
// and the https listener's filter chains (one per certificate, TLS on each, SNI by name).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { TlsParameters_TlsProtocol } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/common';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { DownstreamTlsContext } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileDefinition } from '../definition/load';
import type { ResourcesByType } from '../xds/resources';
import { typeUrls } from '../xds/type-urls';
import { unpack } from './any';
import { exemptPathRegex } from './https-redirect';

const testdata = resolve(import.meta.dirname, 'testdata');
const compileCase = (name: string) => {
  const compiled = compileDefinition(parse(readFileSync(resolve(testdata, 'in', `${name}.yaml`), 'utf8')), {
    baseDir: resolve(testdata, 'in'),
  });
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
  return compiled.resources;
};
const decoded = <T>(resources: ResourcesByType, typeUrl: string, codec: { decode(b: Uint8Array): T }) =>
  (resources.get(typeUrl) ?? []).map((r) => codec.decode(r.resource.value));

describe('translateSecrets', () => {
  it('serves each certificate file and its key, as read, under the name the listener asks for', () => {
    const secrets = decoded(compileCase('https-sni'), typeUrls.secret, Secret);
    expect(secrets.map((s) => s.name)).toEqual(['ingress_https_cert_0', 'ingress_https_cert_1']);
    expect(secrets[0]?.tlsCertificate?.certificateChain?.inlineString).toBe(
      readFileSync(resolve(testdata, 'tls/api.crt'), 'utf8'),
    );
    expect(secrets[0]?.tlsCertificate?.privateKey?.inlineString).toBe(
      readFileSync(resolve(testdata, 'tls/api.key'), 'utf8'),
    );
  });

  it('serves no secret for a definition without listeners.https', () => {
    expect(compileCase('minimal').get(typeUrls.secret)).toEqual([]);
  });
});

describe('the https listener', () => {
  const listeners = decoded(compileCase('https-sni'), typeUrls.listener, Listener);
  const https = listeners.find((l) => l.name === 'ingress_https');

  it('reads SNI with the TLS inspector and chooses a chain per certificate, the default last', () => {
    expect(https?.address?.socketAddress?.portValue).toBe(8443);
    expect(https?.listenerFilters.map((f) => f.name)).toEqual(['envoy.filters.listener.tls_inspector']);
    const chains = https?.filterChains ?? [];
    expect(chains.map((c) => c.filterChainMatch?.serverNames ?? [])).toEqual([['api.example', 'www.api.example'], []]);
    const secretOf = (i: number) => {
      const socket = chains[i]?.transportSocket;
      if (!socket?.typedConfig) throw new Error(`chain ${i} has no TLS`);
      return unpack(DownstreamTlsContext, socket.typedConfig).commonTlsContext?.tlsCertificateSdsSecretConfigs;
    };
    expect(secretOf(0)?.map((s) => s.name)).toEqual(['ingress_https_cert_0']);
    expect(secretOf(1)?.map((s) => s.name)).toEqual(['ingress_https_cert_1']);
    expect(secretOf(1)?.[0]?.sdsConfig?.ads).toEqual({});
  });

  it('allows TLS 1.2 with ECDHE AEAD ciphers and TLS 1.3, and offers h2 then http/1.1', () => {
    const socket = https?.filterChains[0]?.transportSocket;
    if (!socket?.typedConfig) throw new Error('no TLS');
    const common = unpack(DownstreamTlsContext, socket.typedConfig).commonTlsContext;
    expect(common?.tlsParams?.tlsMinimumProtocolVersion).toBe(TlsParameters_TlsProtocol.TLSv1_2);
    expect(common?.tlsParams?.tlsMaximumProtocolVersion).toBe(TlsParameters_TlsProtocol.TLSv1_3);
    for (const cipher of common?.tlsParams?.cipherSuites ?? [])
      expect(cipher).toMatch(/^ECDHE-(ECDSA|RSA)-(AES\d+-GCM|CHACHA20)/);
    expect(common?.alpnProtocols).toEqual(['h2', 'http/1.1']);
  });

  it('leaves the plain-HTTP listener without TLS, on the redirecting routes', () => {
    const http = listeners.find((l) => l.name === 'ingress_http');
    expect(http?.filterChains.map((c) => c.transportSocket)).toEqual([undefined]);
    expect(listeners.map((l) => l.name)).toEqual(['ingress_http', 'ingress_https']);
  });
});

describe('the redirect of plain HTTP', () => {
  const redirectOf = (httpsPort: number) => {
    const input = parse(readFileSync(resolve(testdata, 'in/http-redirect.yaml'), 'utf8'));
    input.listeners.https.port = httpsPort;
    const compiled = compileDefinition(input, { baseDir: resolve(testdata, 'in') });
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
    const config = decoded(compiled.resources, typeUrls.route, RouteConfiguration).find(
      (c) => c.name === 'ingress_http_redirect',
    );
    return config?.virtualHosts[0]?.routes.at(-1)?.redirect;
  };

  it('puts the https port in the Location, except 443', () => {
    expect(redirectOf(8443)).toMatchObject({ httpsRedirect: true, portRedirect: 8443 });
    expect(redirectOf(443)).toMatchObject({ httpsRedirect: true, portRedirect: 0 });
  });
});

describe('exemptPathRegex', () => {
  it.each([
    [[{ kind: 'exact', value: '/health' }], '/health(?:\\?.*)?'],
    [
      [
        { kind: 'exact', value: '/a.b' },
        { kind: 'prefix', value: '/status/' },
      ],
      '(?:/a\\.b(?:\\?.*)?|/status/.*)',
    ],
  ] as const)('%j → %s', (exempt, regex) => {
    expect(exemptPathRegex([...exempt])).toBe(regex);
  });
});
