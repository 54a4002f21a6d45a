// Definition → IR for who the client is (trusted proxies), IP and geo rules, and request
// header hygiene. Presets are expanded here so translators see only CIDR ranges.

import { parseCidr } from '../definition/edge/cidr';
import { isPreset, type TrustedProxyPreset } from '../definition/edge/client-address';
import type { FieldError } from '../definition/field-error';
import { cloudflareIpv4, cloudflareIpv6 } from '../definition/presets/cloudflare-ips';
import type { GatewayDefinition } from '../definition/schema';
import type { CidrIR, ClientAddressIR, IpRulesIR, RequestHeadersIR } from './types';

const presets: Record<TrustedProxyPreset, readonly string[]> = {
  cloudflare: [...cloudflareIpv4, ...cloudflareIpv6],
};

export function buildEdgeClient(
  edge: GatewayDefinition['edge'],
  errors: FieldError[],
): { clientAddress: ClientAddressIR; ipRules: IpRulesIR; requestHeaders: RequestHeadersIR } {
  const trustedProxies = uniqueCidrs(
    edge.trustedProxies.flatMap((entry) => (isPreset(entry) ? presets[entry] : [entry])),
  );
  if (edge.geoBlock !== undefined && trustedProxies.length === 0) {
    errors.push({
      path: 'edge.geoBlock',
      message: `the country header (${edge.geoBlock.countryHeader}) is believed only from edge.trustedProxies, and none are listed, so nothing would ever be blocked`,
    });
  }
  return {
    clientAddress: { trustedProxies },
    ipRules: {
      allow: uniqueCidrs(edge.ipRules.allow),
      deny: uniqueCidrs(edge.ipRules.deny),
      geoBlock: edge.geoBlock && {
        countries: [...new Set(edge.geoBlock.countries)].sort(),
        countryHeader: edge.geoBlock.countryHeader.toLowerCase(),
      },
    },
    requestHeaders: {
      strip: [...new Set(edge.headers.strip)],
      maxCount: edge.headers.maxCount,
      maxSizeKb: edge.headers.maxSizeKb,
    },
  };
}

/** Validated by the schema; duplicates dropped, declared order kept. */
function uniqueCidrs(texts: readonly string[]): CidrIR[] {
  const seen = new Set<string>();
  const out: CidrIR[] = [];
  for (const text of texts) {
    const parsed = parseCidr(text);
    if ('problem' in parsed) throw new Error(`unvalidated CIDR: ${parsed.problem}`);
    const key = `${parsed.address}/${parsed.prefixLen}`;
    if (!seen.has(key)) out.push(parsed);
    seen.add(key);
  }
  return out;
}
