// Service-to-service policy: the inbound listener's RBAC filter allows exactly the requests an
// allow rule of the definition names, by the caller's verified certificate (its URI SAN, the
// SPIFFE id: RBAC's `authenticated.principal_name` reads the URI SAN first) and the request's
// method and path. Everything else is a 403 (ALLOW with no matching policy denies), and a
// service with no rules accepts no caller at all.
import type { Permission, Principal } from '@sekisho/proto/envoy/config/rbac/v3/rbac';
import { RBAC_Action } from '@sekisho/proto/envoy/config/rbac/v3/rbac';
import { RBAC } from '@sekisho/proto/envoy/extensions/filters/http/rbac/v3/rbac';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { MeshAllowIR, MeshServiceIR } from '../../ir/types';
import { pack } from '../any';
import type { DeepPartial } from '../route-parts';

export const rbacFilterName = 'envoy.filters.http.rbac';

/** The stat prefix of the filter's allowed/denied counters (http.<hcm>.rbac.sekisho_mesh.*). */
const rbacStatPrefix = 'sekisho_mesh.';

export function meshRbacFilter(service: MeshServiceIR): HttpFilter {
  const policies: Record<string, DeepPartial<{ permissions: Permission[]; principals: Principal[] }>> = {};
  for (const [index, rule] of service.allow.entries()) {
    if (rule.principals.length === 0) continue;
    policies[`allow_${index}`] = { permissions: [permissionOf(rule)], principals: rule.principals.map(principal) };
  }
  return HttpFilter.fromPartial({
    name: rbacFilterName,
    typedConfig: pack(
      RBAC,
      RBAC.fromPartial({ rules: { action: RBAC_Action.ALLOW, policies }, rulesStatPrefix: rbacStatPrefix }),
    ),
  });
}

function principal(spiffeId: string): DeepPartial<Principal> {
  return { authenticated: { principalName: { exact: spiffeId } } };
}

/** Any of the methods and any of the paths; a list the rule leaves out matches everything. */
function permissionOf(rule: MeshAllowIR): DeepPartial<Permission> {
  const parts: DeepPartial<Permission>[] = [];
  if (rule.methods.length > 0) {
    parts.push({
      orRules: {
        rules: rule.methods.map((method) => ({ header: { name: ':method', stringMatch: { exact: method } } })),
      },
    });
  }
  if (rule.paths.length > 0) {
    parts.push({
      orRules: {
        rules: rule.paths.map((path) => ({
          // url_path is the path without the query; normalised by the connection manager first.
          urlPath: { path: path.kind === 'exact' ? { exact: path.value } : { prefix: path.value } },
        })),
      },
    });
  }
  if (parts.length === 0) return { any: true };
  return parts.length === 1 ? (parts[0] as DeepPartial<Permission>) : { andRules: { rules: parts } };
}
