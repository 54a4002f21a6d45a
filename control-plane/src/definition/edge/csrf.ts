// CSRF: Envoy's CSRF filter refuses a state-changing request (POST, PUT, PATCH, DELETE) whose
// Origin (or Referer) is neither the gateway's own host nor a trusted origin.
import { z } from 'zod';
import { corsOrigin } from './cors';

export const csrfSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Trusted besides the gateway's own host and every CORS origin (edge.cors and the routes'). */
  additionalOrigins: z.array(corsOrigin).default([]),
});
