// The `edge` section of the gateway definition: what the ingress does for every request
// before and around routing (browsers, client addresses, header hygiene, limits before
// authentication). Each concern's schema lives in its own file under edge/ and is one key here.
import { z } from 'zod';
import { defaultMaxRequestBodyBytes, maxRequestBodyBytes } from './edge/body-limit';

export const edgeSchema = z.strictObject({
  maxRequestBodyBytes: maxRequestBodyBytes.default(defaultMaxRequestBodyBytes),
});
