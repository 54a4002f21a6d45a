// The `listeners` section of the gateway definition: where the ingress listens, plain HTTP and
// HTTPS. The certificate files are read, parsed and matched with their keys in the IR
// (ir/tls.ts); here only their shape is checked.
import { isIP } from 'node:net';
import { z } from 'zod';

const address = z
  .string()
  .refine((text) => isIP(text) !== 0, { message: 'must be an IP address, e.g. 0.0.0.0' })
  .default('0.0.0.0');

const port = z.int().min(1).max(65_535);

/** "/health" (exactly that path) or "/health/*" (everything under "/health/"), as in routes[].match. */
const exemptPath = z.string().regex(/^\/[^\s?#*]*(?:\/\*)?$/, {
  message: 'must be a path "/health" or a prefix "/status/*" (no spaces, query, fragment or other "*")',
});

/** A DNS name or a wildcard "*.example.com" (what a TLS client sends as SNI). */
const serverName = z
  .string()
  .regex(/^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, {
    message: 'must be a lower-case DNS name ("api.example.com") or a wildcard ("*.example.com")',
  });

const pemFile = z.string().min(1, { message: 'must be the path of a PEM file' });

const certificate = z.strictObject({
  /** PEM: the server certificate, then any intermediates. */
  certFile: pemFile,
  /** PEM: the certificate's private key. */
  keyFile: pemFile,
  /** SNI names this certificate answers; without them it is the default certificate. */
  serverNames: z.array(serverName).min(1).optional(),
});

export const httpListenerSchema = z.strictObject({
  address,
  port,
  /** Replaced by edge.trustedProxies: a hop count trusted X-Forwarded-For from any client. */
  xffNumTrustedHops: z
    .unknown()
    .refine((value) => value === undefined, {
      message:
        'was replaced by edge.trustedProxies (CIDR ranges or "cloudflare"): a hop count let any client that sent X-Forwarded-For choose its own IP',
    })
    .optional(),
  /** 308 to the https listener; on by default when there is one. */
  redirectToHttps: z.boolean().optional(),
  /** Paths still routed on plain HTTP when redirecting (health checks of a load balancer). */
  redirectExempt: z.array(exemptPath).default([]),
});

export const httpsListenerSchema = z.strictObject({
  address,
  port,
  certificates: z.array(certificate).min(1),
});

export const listenersSchema = z.strictObject({
  http: httpListenerSchema,
  https: httpsListenerSchema.optional(),
});
