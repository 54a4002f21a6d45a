// The `edge` section of the gateway definition: what the ingress does for every request
// before and around routing (browsers, client addresses, header hygiene, limits before
// authentication). Each concern's schema lives in its own file under edge/ and is one key here.
import { z } from 'zod';
import { trustedProxies } from './edge/client-address';
import { headers } from './edge/headers';
import { geoBlock, ipRules } from './edge/ip-rules';

export const edgeSchema = z.strictObject({
  trustedProxies,
  ipRules,
  geoBlock,
  headers,
});
