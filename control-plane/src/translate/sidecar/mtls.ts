// The mesh's mutual TLS: every mesh listener and cluster reads the workload's certificate and
// the mesh's trust bundle over SDS (ADS), by the names the mesh CA serves (mesh/contract.ts),
// so a rotated certificate is a Secret update with no listener or cluster change.
//
// Downstream (a sidecar's inbound listener): a client certificate is REQUIRED and must chain
// to the trust bundle; which verified identities may call what is the RBAC filter's decision
// (rbac.ts), so a wrongly identified peer gets a 403 with a reason, a plaintext or foreign-CA
// peer a failed handshake. Upstream (the ingress's and sidecars' clusters of mesh services):
// the peer's certificate must chain to the bundle AND carry the callee's SPIFFE id as its URI
// SAN, so a workload answering at another's address is refused.
import type { TransportSocket } from '@sekisho/proto/envoy/config/core/v3/base';
import { ApiVersion } from '@sekisho/proto/envoy/config/core/v3/config_source';
import { SubjectAltNameMatcher_SanType } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/common';
import { DownstreamTlsContext, UpstreamTlsContext } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import type { ClusterIR } from '../../ir/types';
import { meshSecretNames } from '../../mesh/contract';
import { pack } from '../any';
import { tlsTransportSocketName, upstreamTlsTransportSocketName } from '../filter-names';
import { alpnProtocols, tlsParameters } from '../tls';

const overAds = { ads: {}, resourceApiVersion: ApiVersion.V3 } as const;

function commonMeshTls(peerSpiffeId: string | undefined, alpn: readonly string[]) {
  return {
    // TLS 1.3 only between workloads: both ends are Envoys of this mesh.
    tlsParams: {
      ...tlsParameters,
      tlsMinimumProtocolVersion: tlsParameters.tlsMaximumProtocolVersion,
      cipherSuites: [],
    },
    tlsCertificateSdsSecretConfigs: [{ name: meshSecretNames.certificate, sdsConfig: overAds }],
    combinedValidationContext: {
      defaultValidationContext:
        peerSpiffeId === undefined
          ? {}
          : {
              matchTypedSubjectAltNames: [
                { sanType: SubjectAltNameMatcher_SanType.URI, matcher: { exact: peerSpiffeId } },
              ],
            },
      validationContextSdsSecretConfig: { name: meshSecretNames.trustBundle, sdsConfig: overAds },
    },
    alpnProtocols: [...alpn],
  };
}

/** A sidecar's inbound listener: mesh certificate, client certificate required, chained to the bundle. */
export function meshDownstreamTls(): TransportSocket {
  return {
    name: tlsTransportSocketName,
    typedConfig: pack(
      DownstreamTlsContext,
      DownstreamTlsContext.fromPartial({
        requireClientCertificate: true,
        commonTlsContext: commonMeshTls(undefined, alpnProtocols),
      }),
    ),
  };
}

/** A cluster of a mesh service: the caller's mesh certificate, the callee's SPIFFE id required. */
export function meshUpstreamTls(peerSpiffeId: string, protocol: ClusterIR['protocol']): TransportSocket {
  return {
    name: upstreamTlsTransportSocketName,
    typedConfig: pack(
      UpstreamTlsContext,
      UpstreamTlsContext.fromPartial({
        commonTlsContext: commonMeshTls(peerSpiffeId, protocol === 'http2' ? ['h2'] : ['http/1.1']),
      }),
    ),
  };
}
