// Who the client is. The ingress listener gets one filter chain per kind of peer, chosen by
// Envoy on the connection's source address (filter_chain_match.source_prefix_ranges):
//
// - a trusted proxy (edge.trustedProxies): the client is the address that proxy appended to
//   X-Forwarded-For (Cloudflare appends the same address it sends as CF-Connecting-IP);
// - anyone else: the client is the connection's peer, and no header can move it.
//
// Envoy's derived address is what the rate-limit remote_address action, RBAC's remote_ip,
// the access log and ext-authz see. (The XffConfig.xff_trusted_cidrs field of newer Envoys
// is missing from the protos Sekisho generates from; a chain per peer kind needs no new field.)

import type { CidrRange } from '@sekisho/proto/envoy/config/core/v3/address';
import type { FilterChainMatch } from '@sekisho/proto/envoy/config/listener/v3/listener_components';
import type { GatewayIR } from '../ir/types';
import { locationHeaders } from './access-log';

export type PeerKind = 'trusted-proxy' | 'direct';

export interface ClientAddressChain {
  /** Suffix of the filter chain's name and of the HCM's stat prefix. */
  peer: PeerKind;
  /** Undefined: every connection no other chain matches. */
  filterChainMatch: Partial<FilterChainMatch> | undefined;
  /** The HCM fields that decide the client address. */
  connectionManager: { useRemoteAddress: boolean; xffNumTrustedHops: number };
}

/** Headers only a trusted proxy may send on; a direct client's copies are removed. */
export function cdnHeaders(ir: GatewayIR): string[] {
  const geo = ir.ipRules.geoBlock?.countryHeader;
  return [
    'cf-ipcountry',
    'cf-visitor',
    'cf-ray',
    'cf-ew-via',
    'cdn-loop',
    ...(geo === undefined ? [] : [geo]),
    // The geo anomaly rule's place (threats.geoAnomaly): a client must not pick where it is.
    ...locationHeaders(ir.threats),
  ].filter((name, index, all) => all.indexOf(name) === index);
}

/** Removed from every request: the gateway's X-Forwarded-For is the one client address. */
export const clientAddressHeaders = ['cf-connecting-ip', 'cf-connecting-ipv6', 'true-client-ip'] as const;

export function clientAddressChains(ir: GatewayIR): ClientAddressChain[] {
  const direct: ClientAddressChain = {
    peer: 'direct',
    filterChainMatch: undefined,
    // use_remote_address with no trusted hops: the peer is the client; Envoy also sets
    // X-Forwarded-Proto itself and treats the request as external (drops x-envoy-* headers).
    connectionManager: { useRemoteAddress: true, xffNumTrustedHops: 0 },
  };
  if (ir.clientAddress.trustedProxies.length === 0) return [direct];
  const trusted: ClientAddressChain = {
    peer: 'trusted-proxy',
    filterChainMatch: { sourcePrefixRanges: ir.clientAddress.trustedProxies.map(cidrRange) },
    // One hop: the rightmost X-Forwarded-For entry, the one the trusted proxy itself appended.
    // Entries further left were written by whoever the proxy's client was.
    connectionManager: { useRemoteAddress: true, xffNumTrustedHops: 1 },
  };
  return [trusted, direct];
}

export function cidrRange(cidr: { address: string; prefixLen: number }): CidrRange {
  return { addressPrefix: cidr.address, prefixLen: cidr.prefixLen };
}
