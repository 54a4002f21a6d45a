// Access-log filters written in CEL: how a local-reply mapper tells apart replies that share
// a status (an RBAC 403 from ext-authz's 403, a refused preflight from a service's 403).

import { AccessLogFilter } from '@sekisho/proto/envoy/config/accesslog/v3/accesslog';
import { ExpressionFilter } from '@sekisho/proto/envoy/extensions/access_loggers/filters/cel/v3/cel';
import { pack } from './any';

export function celFilter(expression: string): AccessLogFilter {
  return AccessLogFilter.fromPartial({
    extensionFilter: {
      name: 'envoy.access_loggers.extension_filters.cel',
      typedConfig: pack(ExpressionFilter, ExpressionFilter.fromPartial({ expression })),
    },
  });
}
