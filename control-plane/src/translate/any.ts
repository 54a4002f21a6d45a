// Packing messages into google.protobuf.Any, and the reverse for humans: every type the
// translators pack is registered here with its type URL, so a packed resource can be
// rendered with each Any expanded (`"@type"` plus the decoded fields), the way Envoy's
// config_dump shows it. pack() refuses unregistered types, so rendering never meets an
// Any it cannot open.
import { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { ClusterLoadAssignment } from '@sekisho/proto/envoy/config/endpoint/v3/endpoint';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { RouteConfiguration } from '@sekisho/proto/envoy/config/route/v3/route';
import { ExpressionFilter } from '@sekisho/proto/envoy/extensions/access_loggers/filters/cel/v3/cel';
import { HttpGrpcAccessLogConfig } from '@sekisho/proto/envoy/extensions/access_loggers/grpc/v3/als';
import { StdoutAccessLog } from '@sekisho/proto/envoy/extensions/access_loggers/stream/v3/stream';
import { ExtensionWithMatcher } from '@sekisho/proto/envoy/extensions/common/matching/v3/extension_matcher';
import { Brotli } from '@sekisho/proto/envoy/extensions/compression/brotli/compressor/v3/brotli';
import { Gzip } from '@sekisho/proto/envoy/extensions/compression/gzip/compressor/v3/gzip';
import { SkipFilter } from '@sekisho/proto/envoy/extensions/filters/common/matcher/action/v3/skip_action';
import { Buffer as BufferFilter, BufferPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/buffer/v3/buffer';
import { Compressor } from '@sekisho/proto/envoy/extensions/filters/http/compressor/v3/compressor';
import { Cors, CorsPolicy } from '@sekisho/proto/envoy/extensions/filters/http/cors/v3/cors';
import { CsrfPolicy } from '@sekisho/proto/envoy/extensions/filters/http/csrf/v3/csrf';
import { ExtAuthz, ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import {
  HeaderMutation,
  HeaderMutationPerRoute,
} from '@sekisho/proto/envoy/extensions/filters/http/header_mutation/v3/header_mutation';
import { RateLimit } from '@sekisho/proto/envoy/extensions/filters/http/ratelimit/v3/rate_limit';
import { RBAC } from '@sekisho/proto/envoy/extensions/filters/http/rbac/v3/rbac';
import { Router } from '@sekisho/proto/envoy/extensions/filters/http/router/v3/router';
import { TlsInspector } from '@sekisho/proto/envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector';
import { HttpConnectionManager } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { UriTemplateMatchConfig } from '@sekisho/proto/envoy/extensions/path/match/uri_template/v3/uri_template_match';
import { UriTemplateRewriteConfig } from '@sekisho/proto/envoy/extensions/path/rewrite/uri_template/v3/uri_template_rewrite';
import { Secret } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/secret';
import { DownstreamTlsContext, UpstreamTlsContext } from '@sekisho/proto/envoy/extensions/transport_sockets/tls/v3/tls';
import { HttpProtocolOptions } from '@sekisho/proto/envoy/extensions/upstreams/http/v3/http_protocol_options';
import { HttpRequestHeaderMatchInput } from '@sekisho/proto/envoy/type/matcher/v3/http_inputs';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import { AuthzPolicy, RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';

/** The part of ts-proto's message functions that packing and rendering need. */
export interface MessageCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
  toJSON(message: T): unknown;
}

const typeUrlPrefix = 'type.googleapis.com/';

// biome-ignore lint/suspicious/noExplicitAny: a registry of heterogeneous message types
const packable: ReadonlyArray<readonly [string, MessageCodec<any>]> = [
  ['envoy.config.cluster.v3.Cluster', Cluster],
  ['envoy.config.endpoint.v3.ClusterLoadAssignment', ClusterLoadAssignment],
  ['envoy.config.listener.v3.Listener', Listener],
  ['envoy.config.route.v3.RouteConfiguration', RouteConfiguration],
  ['envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter', ExpressionFilter],
  ['envoy.extensions.access_loggers.stream.v3.StdoutAccessLog', StdoutAccessLog],
  ['envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig', HttpGrpcAccessLogConfig],
  ['envoy.extensions.common.matching.v3.ExtensionWithMatcher', ExtensionWithMatcher],
  ['envoy.extensions.compression.brotli.compressor.v3.Brotli', Brotli],
  ['envoy.extensions.compression.gzip.compressor.v3.Gzip', Gzip],
  ['envoy.extensions.filters.common.matcher.action.v3.SkipFilter', SkipFilter],
  ['envoy.extensions.filters.http.compressor.v3.Compressor', Compressor],
  ['envoy.extensions.filters.http.cors.v3.Cors', Cors],
  ['envoy.extensions.filters.http.cors.v3.CorsPolicy', CorsPolicy],
  ['envoy.extensions.filters.http.csrf.v3.CsrfPolicy', CsrfPolicy],
  ['envoy.extensions.filters.http.buffer.v3.Buffer', BufferFilter],
  ['envoy.extensions.filters.http.buffer.v3.BufferPerRoute', BufferPerRoute],
  ['envoy.extensions.filters.http.ext_authz.v3.ExtAuthz', ExtAuthz],
  ['envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute', ExtAuthzPerRoute],
  ['envoy.extensions.filters.http.header_mutation.v3.HeaderMutation', HeaderMutation],
  ['envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute', HeaderMutationPerRoute],
  ['envoy.extensions.filters.http.ratelimit.v3.RateLimit', RateLimit],
  ['envoy.extensions.filters.http.rbac.v3.RBAC', RBAC],
  ['envoy.extensions.filters.http.router.v3.Router', Router],
  ['envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', HttpConnectionManager],
  ['envoy.extensions.upstreams.http.v3.HttpProtocolOptions', HttpProtocolOptions],
  ['envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', UriTemplateMatchConfig],
  ['envoy.extensions.path.rewrite.uri_template.v3.UriTemplateRewriteConfig', UriTemplateRewriteConfig],
  ['envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', UpstreamTlsContext],
  ['envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector', TlsInspector],
  ['envoy.extensions.transport_sockets.tls.v3.Secret', Secret],
  ['envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext', DownstreamTlsContext],
  ['envoy.type.matcher.v3.HttpRequestHeaderMatchInput', HttpRequestHeaderMatchInput],
  ['sekisho.policy.v1.AuthzPolicy', AuthzPolicy],
  ['sekisho.policy.v1.RateLimitPolicy', RateLimitPolicy],
];

// biome-ignore lint/suspicious/noExplicitAny: see above
const codecByTypeUrl = new Map<string, MessageCodec<any>>(
  packable.map(([name, codec]) => [typeUrlPrefix + name, codec]),
);
// biome-ignore lint/suspicious/noExplicitAny: see above
const typeUrlByCodec = new Map<MessageCodec<any>, string>(
  packable.map(([name, codec]) => [codec, typeUrlPrefix + name]),
);

export function typeUrlOf<T>(codec: MessageCodec<T>): string {
  const typeUrl = typeUrlByCodec.get(codec);
  if (typeUrl === undefined) throw new Error('pack(): message type is not registered in translate/any.ts');
  return typeUrl;
}

export function encode<T>(codec: MessageCodec<T>, message: T): Buffer {
  const bytes = codec.encode(message).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function pack<T>(codec: MessageCodec<T>, message: T): Any {
  return { typeUrl: typeUrlOf(codec), value: encode(codec, message) };
}

/** Decodes a packed message of a registered type (checks the type URL). */
export function unpack<T>(codec: MessageCodec<T>, any: Any): T {
  const expected = typeUrlOf(codec);
  if (any.typeUrl !== expected) throw new Error(`expected ${expected}, got ${any.typeUrl}`);
  return codec.decode(any.value);
}

/** A packed message as JSON with every nested Any expanded to `{"@type", ...fields}`. */
export function renderAny(any: Any): Record<string, unknown> {
  const codec = codecByTypeUrl.get(any.typeUrl);
  if (codec === undefined) throw new Error(`cannot render unregistered type ${any.typeUrl}`);
  const fields = expandNested(codec.toJSON(codec.decode(any.value)));
  return { '@type': any.typeUrl, ...(fields as Record<string, unknown>) };
}

function expandNested(json: unknown): unknown {
  if (Array.isArray(json)) return json.map(expandNested);
  if (json === null || typeof json !== 'object') return json;
  if (isAnyJson(json)) {
    return renderAny({ typeUrl: json.typeUrl, value: Buffer.from(json.value ?? '', 'base64') });
  }
  return Object.fromEntries(Object.entries(json).map(([key, value]) => [key, expandNested(value)]));
}

/** ts-proto renders an Any as `{ typeUrl, value: base64 }` (value omitted when empty). */
function isAnyJson(json: object): json is { typeUrl: string; value?: string } {
  const keys = Object.keys(json);
  const record = json as Record<string, unknown>;
  return (
    keys.includes('typeUrl') &&
    keys.every((key) => key === 'typeUrl' || key === 'value') &&
    typeof record.typeUrl === 'string' &&
    record.typeUrl.startsWith(typeUrlPrefix)
  );
}
