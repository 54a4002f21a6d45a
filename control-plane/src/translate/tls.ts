// IR → what TLS needs in Envoy: one SDS Secret per certificate (the PEM text the control plane
// read, so a rotated file reaches Envoy as a Secret update with no listener change and no
// dropped connection), and the downstream TLS transport socket that asks for it over ADS.

import type { TransportSocket } from '@sekisho/proto/envoy/config/core/v3/base';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import type { ListenerFilter } from '@sekisho/proto/envoy/config/listener/v3/listener_components';
import { TlsInspector } from '@sekisho/proto/envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector';
import { TlsParameters_TlsProtocol } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/common';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { DownstreamTlsContext } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import type { GatewayIR } from '../ir/types';
import { pack } from './any';
import { tlsInspectorName, tlsTransportSocketName } from './filter-names';

/**
 * TLS 1.2 and 1.3 only (1.3 is negotiated whenever the client has it). For 1.2, forward secrecy
 * and AEAD only: ECDHE with AES-GCM or ChaCha20-Poly1305 (Mozilla's "intermediate" list; 1.3's
 * suites are fixed by BoringSSL and all AEAD).
 */
export const tlsParameters = {
  tlsMinimumProtocolVersion: TlsParameters_TlsProtocol.TLSv1_2,
  tlsMaximumProtocolVersion: TlsParameters_TlsProtocol.TLSv1_3,
  cipherSuites: [
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
    'ECDHE-RSA-CHACHA20-POLY1305',
  ],
} as const;

/** HTTP/2 first; the connection manager's AUTO codec follows what ALPN chose. */
export const alpnProtocols = ['h2', 'http/1.1'] as const;

export function translateSecrets(ir: GatewayIR): Secret[] {
  return (ir.https?.certificates ?? []).map((certificate) =>
    Secret.fromPartial({
      name: certificate.secretName,
      tlsCertificate: {
        certificateChain: { inlineString: certificate.certificateChainPem },
        privateKey: { inlineString: certificate.privateKeyPem },
      },
    }),
  );
}

/** Terminates TLS with the named Secret, fetched over ADS (the listener warms until it arrives). */
export function downstreamTlsTransportSocket(secretName: string): TransportSocket {
  return {
    name: tlsTransportSocketName,
    typedConfig: pack(
      DownstreamTlsContext,
      DownstreamTlsContext.fromPartial({
        commonTlsContext: {
          tlsParams: { ...tlsParameters, cipherSuites: [...tlsParameters.cipherSuites] },
          tlsCertificateSdsSecretConfigs: [
            { name: secretName, sdsConfig: { ads: {}, resourceApiVersion: ApiVersion.V3 } },
          ],
          alpnProtocols: [...alpnProtocols],
        },
      }),
    ),
  };
}

/** Reads the ClientHello's SNI (and ALPN) so filter chains can be chosen by server name. */
export function tlsInspector(): ListenerFilter {
  return { name: tlsInspectorName, typedConfig: pack(TlsInspector, TlsInspector.fromPartial({})) };
}
