// Request-body size limits: a gateway-wide default (edge.maxRequestBodyBytes) and a
// per-route override (routes[].maxRequestBodyBytes). Envoy refuses a larger body with 413
// before the service sees any of it.
import { z } from 'zod';

/** 1 MiB: a JSON API has no large uploads; routes that take files raise it. */
export const defaultMaxRequestBodyBytes = 1024 * 1024;

/** Envoy buffers up to this much per request, so it bounds memory per request too. */
export const maxRequestBodyBytes = z
  .int()
  .min(1)
  .max(64 * 1024 * 1024, { message: 'at most 67108864 (64 MiB): Envoy holds the whole body in memory' });
