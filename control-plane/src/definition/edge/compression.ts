// Compression: Envoy's compressor filter with brotli and gzip for text responses
// (JSON, text/*, JavaScript, SVG: Envoy's default content types), as Accept-Encoding allows.
import { z } from 'zod';

export const compressionSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Smaller bodies are sent as they are: compressing them costs more than it saves. */
  minLength: z.int().min(0).max(1_048_576).default(1024),
  /** Offered in this order when the client accepts several equally. */
  algorithms: z
    .array(z.enum(['br', 'gzip']))
    .min(1)
    .refine((list) => new Set(list).size === list.length, { message: 'lists an algorithm twice' })
    .default(['br', 'gzip']),
});
