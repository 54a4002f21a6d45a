// The `edge` section of the gateway definition: what the ingress does for every request
// before and around routing (browsers, client addresses, header hygiene, limits before
// authentication). Each concern's schema lives in its own file under edge/ and is one key here.
import { z } from 'zod';
import { defaultMaxRequestBodyBytes, maxRequestBodyBytes } from './edge/body-limit';
import { trustedProxies } from './edge/client-address';
import { compressionSchema } from './edge/compression';
import { corsSchema } from './edge/cors';
import { csrfSchema } from './edge/csrf';
import { headers } from './edge/headers';
import { geoBlock, ipRules } from './edge/ip-rules';
import { securityHeadersSchema } from './edge/security-headers';

export const edgeSchema = z.strictObject({
  cors: corsSchema.optional(),
  securityHeaders: securityHeadersSchema.prefault({}),
  csrf: csrfSchema.prefault({}),
  compression: compressionSchema.prefault({}),
  trustedProxies,
  ipRules,
  geoBlock,
  headers,
  maxRequestBodyBytes: maxRequestBodyBytes.default(defaultMaxRequestBodyBytes),
});
