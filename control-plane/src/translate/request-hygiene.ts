// What every Sekisho connection manager (the ingress's, each sidecar's) does to a request
// before it is routed: path hygiene, so "/api/v1/../admin" or "%2F" tricks cannot reach a route
// other than the one the path appears to name; headers with underscores refused (they could
// alias a dash-named header upstream); and the header limits above edge.headers, which
// ext-authz enforces (header-limits.ts). One place, so the ingress and the sidecars never drift.
import { HttpProtocolOptions_HeadersWithUnderscoresAction } from '@sekisho/proto/envoy/config/core/v3/protocol';
import {
  type HttpConnectionManager,
  HttpConnectionManager_PathWithEscapedSlashesAction,
} from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { GatewayIR } from '../ir/types';
import { edgeLimits } from './edge';
import { envoyHeaderLimits } from './header-limits';
import type { DeepPartial } from './route-parts';

export function requestHygiene(ir: GatewayIR): DeepPartial<HttpConnectionManager> {
  const limits = envoyHeaderLimits(ir);
  return {
    normalizePath: true,
    mergeSlashes: true,
    pathWithEscapedSlashesAction: HttpConnectionManager_PathWithEscapedSlashesAction.UNESCAPE_AND_REDIRECT,
    commonHttpProtocolOptions: {
      headersWithUnderscoresAction: HttpProtocolOptions_HeadersWithUnderscoresAction.REJECT_REQUEST,
      maxHeadersCount: limits.maxHeadersCount,
    },
    http2ProtocolOptions: edgeLimits.http2,
    maxRequestHeadersKb: limits.maxRequestHeadersKb,
  };
}
