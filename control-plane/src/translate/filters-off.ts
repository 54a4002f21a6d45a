// The per-route "filter off" configurations, packed once: tens of thousands of generated routes
// (413, 405, preflight refusals, the HTTPS redirect) carry the same bytes, and packing them per
// route was a measurable part of compiling 10,000 routes.
import { BufferPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/buffer/v3/buffer';
import { ExtAuthzPerRoute } from '@sekisho/proto/envoy/extensions/filters/http/ext_authz/v3/ext_authz';
import type { Any } from '@sekisho/proto/google/protobuf/any';
import { pack } from './any';

/** ext_authz skipped: the route needs no caller (direct responses before authentication, redirects). */
export const extAuthzOff: Readonly<Any> = Object.freeze(
  pack(ExtAuthzPerRoute, ExtAuthzPerRoute.fromPartial({ disabled: true })),
);

/** The buffer filter skipped: it would hold the headers for a body that never comes. */
export const bufferOff: Readonly<Any> = Object.freeze(
  pack(BufferPerRoute, BufferPerRoute.fromPartial({ disabled: true })),
);
