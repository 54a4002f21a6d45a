// Request header limits with headroom. Envoy's codec refuses more headers (or more bytes)
// than the connection manager's limit, but the same limit is checked again after ext_authz
// has added its identity headers: a request just under it became an empty 500
// (ext_authz_invalid). So the codec gets the limit plus headroom, and an RBAC filter before
// ext_authz refuses what the definition allows no more of (edge.headers); local-reply.ts
// answers both with 431 REQUEST_HEADERS_TOO_LARGE.

import { Principal, RBAC_Action } from '@sekisho/proto/envoy/config/rbac/v3/rbac';
import { RBAC } from '@sekisho/proto/envoy/extensions/filters/http/rbac/v3/rbac';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { Expr } from '@sekisho/proto/google/api/expr/v1alpha1/syntax';
import type { GatewayIR } from '../ir/types';
import { pack } from './any';
import { httpFilterNames } from './filter-names';

export const headerLimitsPolicy = 'sekisho_header_limits';

/**
 * What Envoy's header map holds beyond the client's own headers when the check runs: the
 * pseudo-headers :method, :path, :scheme, and x-forwarded-for, x-forwarded-proto,
 * x-request-id and x-envoy-external-address when the client did not send them.
 */
const addedBeforeCheck = 7;
/** Room above the check for what ext-authz adds (six identity headers) and a margin. */
const countHeadroom = 16;
const sizeHeadroomKb = 16;

/** The connection manager's own limits (its codec refuses above them, also with 431). */
export function codecHeaderLimits(ir: GatewayIR): { maxHeadersCount: number; maxRequestHeadersKb: number } {
  return {
    maxHeadersCount: ir.requestHeaders.maxCount + addedBeforeCheck + countHeadroom,
    maxRequestHeadersKb: ir.requestHeaders.maxSizeKb + sizeHeadroomKb,
  };
}

/** size(request.headers) > count || request.total_size > bytes (no body has arrived yet). */
export function headerLimitsFilter(ir: GatewayIR): HttpFilter {
  let id = 0;
  const node = (expr: Omit<Expr, 'id'>): Expr => ({ id: ++id, ...expr });
  const requestField = (field: string) =>
    node({ selectExpr: { operand: node({ identExpr: { name: 'request' } }), field, testOnly: false } });
  const int = (value: number) => node({ constExpr: { int64Value: value } });
  const call = (fn: string, args: Expr[]) => node({ callExpr: { function: fn, args } });
  const condition = call('_||_', [
    call('_>_', [call('size', [requestField('headers')]), int(ir.requestHeaders.maxCount + addedBeforeCheck)]),
    call('_>_', [requestField('total_size'), int(ir.requestHeaders.maxSizeKb * 1024)]),
  ]);
  return HttpFilter.fromPartial({
    name: httpFilterNames.headerLimits,
    typedConfig: pack(
      RBAC,
      RBAC.fromPartial({
        rules: {
          action: RBAC_Action.DENY,
          policies: {
            [headerLimitsPolicy]: {
              permissions: [{ any: true }],
              principals: [Principal.fromPartial({ any: true })],
              condition,
            },
          },
        },
      }),
    ),
  });
}
