// edge.headers: request headers a client may not send on (proxy, rewrite and method-override
// headers that upstream frameworks believe), and the limits on request headers.
import { z } from 'zod';
import { headerName } from './ip-rules';

/** What Envoy's own header handling or a later filter owns, and so cannot be listed here. */
const ownedElsewhere = new Set(['host', 'authorization', 'x-forwarded-for', 'x-forwarded-proto', 'x-request-id']);

/**
 * Headers that make a framework behind the gateway believe something about the client, the
 * URL or the method that the gateway did not decide (IIS/Symfony X-Original-URL, Express
 * "trust proxy", Rails/Laravel method override…).
 */
export const defaultStrippedHeaders = [
  'x-real-ip',
  'forwarded',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-server',
  'x-forwarded-scheme',
  'x-forwarded-ssl',
  'x-original-forwarded-for',
  'x-client-ip',
  'x-cluster-client-ip',
  'true-client-ip',
  'client-ip',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-original-host',
  'x-http-method-override',
  'x-method-override',
  'x-http-method',
];

const strippedHeader = headerName
  .transform((name) => name.toLowerCase())
  .refine((name) => !ownedElsewhere.has(name), {
    message: `host, authorization, x-forwarded-for, x-forwarded-proto and x-request-id are set by the gateway itself (see services.<name>.receiveAuthorization)`,
  });

export const headers = z
  .strictObject({
    /** Client-sent request headers removed before anything else sees the request. */
    strip: z.array(strippedHeader).default(defaultStrippedHeaders),
    /**
     * Most request header entries once the gateway added its own (:method, :path, :scheme,
     * x-forwarded-*, x-request-id, the identity headers): 431 above. Envoy's limit is higher.
     */
    maxCount: z.int().min(10).max(200).default(80),
    /** Largest size of those headers in KiB (names and values): 431 above. */
    maxSizeKb: z.int().min(4).max(64).default(32),
  })
  .default({ strip: defaultStrippedHeaders, maxCount: 80, maxSizeKb: 32 });
