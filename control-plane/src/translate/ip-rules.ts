// IP allow/deny lists and geo-blocking, enforced by Envoy's RBAC filter on the client address
// Envoy derived (remote_ip: the trusted proxy's X-Forwarded-For entry, or the peer), early in
// the chain so a blocked client costs no authentication. Denials are Envoy local replies whose
// response code details name the policy; local-reply.ts maps each to its JSON error code.

import type { AccessLogFilter } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import { Principal, RBAC_Action } from '@sekisho/proto/envoy/config/rbac/v3/rbac';
import { RBAC } from '@sekisho/proto/envoy/extensions/filters/http/rbac/v3/rbac';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { CidrIR, GatewayIR } from '../ir/types';
import { pack } from './any';
import { celFilter } from './cel';
import { cidrRange } from './client-address';
import { httpFilterNames } from './filter-names';

export const ipRulePolicies = { deny: 'sekisho_ip_deny', geoBlock: 'sekisho_geo_block', vip: 'sekisho_vip' } as const;

/**
 * Where the VIP mark is read: the RBAC filter's dynamic metadata carries the shadow policy a
 * request matched (`<prefix>shadow_effective_policy_id`), absent for everyone else.
 */
export const vipMetadata = {
  namespace: 'envoy.filters.http.rbac',
  key: `${ipRulePolicies.vip}_shadow_effective_policy_id`,
  statPrefix: `${ipRulePolicies.vip}_`,
} as const;

/** The RBAC filters, in order (IP deny, then geo); none when nothing is configured. */
export function ipRuleFilters(ir: GatewayIR): HttpFilter[] {
  const { allow, deny, geoBlock } = ir.ipRules;
  const filters: HttpFilter[] = [];
  if (deny.length > 0 || allow.length > 0) {
    filters.push(
      rbacFilter(
        httpFilterNames.ipRules,
        RBAC.fromPartial({
          ...(deny.length === 0
            ? {}
            : {
                rules: { action: RBAC_Action.DENY, policies: { [ipRulePolicies.deny]: anyRequestFrom(fromAny(deny)) } },
              }),
          // Shadow rules decide nothing; they mark VIP requests in dynamic metadata, which the
          // anonymous per-IP rate-limit descriptor reads (descriptors.ts).
          ...(allow.length === 0
            ? {}
            : {
                shadowRules: {
                  action: RBAC_Action.ALLOW,
                  policies: { [ipRulePolicies.vip]: anyRequestFrom(fromAny(allow)) },
                },
                shadowRulesStatPrefix: vipMetadata.statPrefix,
              }),
        }),
      ),
    );
  }
  if (geoBlock !== undefined) {
    const country = Principal.fromPartial({
      orIds: {
        ids: geoBlock.countries.map((code) => ({
          header: { name: geoBlock.countryHeader, stringMatch: { exact: code, ignoreCase: true } },
        })),
      },
    });
    const principal =
      allow.length === 0 ? country : Principal.fromPartial({ andIds: { ids: [country, { notId: fromAny(allow) }] } });
    filters.push(
      rbacFilter(
        httpFilterNames.geoBlock,
        RBAC.fromPartial({
          rules: { action: RBAC_Action.DENY, policies: { [ipRulePolicies.geoBlock]: anyRequestFrom(principal) } },
        }),
      ),
    );
  }
  return filters;
}

/** Matches the local reply of an RBAC denial by the named policy. */
export function deniedBy(policy: string): AccessLogFilter {
  return celFilter(`response.code_details == 'rbac_access_denied_matched_policy[${policy}]'`);
}

function rbacFilter(name: string, config: RBAC): HttpFilter {
  return HttpFilter.fromPartial({ name, typedConfig: pack(RBAC, config) });
}

function fromAny(cidrs: CidrIR[]): Principal {
  return Principal.fromPartial({ orIds: { ids: cidrs.map((cidr) => ({ remoteIp: cidrRange(cidr) })) } });
}

function anyRequestFrom(principal: Principal) {
  return { permissions: [{ any: true }], principals: [principal] };
}
