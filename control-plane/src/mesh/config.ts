// The mesh CA's environment variables (part of the control plane's configuration schema) and
// the one function that builds a MeshCa from them.
import { resolve } from 'node:path';
import { envDuration } from '@sekisho/service-kit/config';
import type { Logger } from '@sekisho/service-kit/logger';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { MeshCa, type MeshCaOptions } from './ca';
import { type CaSource, meshCaVariables } from './ca-material';
import { isTrustDomain } from './spiffe';

const minTtlMs = 5 * 60_000;
const maxTtlMs = 7 * 24 * 60 * 60_000;

/** Spread into the control plane's configuration object. */
export const meshCaConfigFields = {
  /** The signing certificate (an intermediate, then any intermediates above it), PEM. */
  CONTROL_PLANE_MESH_CA_CERT_FILE: z.string().min(1).optional(),
  /** Its unencrypted private key (ECDSA P-256/P-384 or RSA), PEM. */
  CONTROL_PLANE_MESH_CA_KEY_FILE: z.string().min(1).optional(),
  /** The trust bundle: the root certificate(s) every workload trusts, PEM. */
  CONTROL_PLANE_MESH_CA_BUNDLE_FILE: z.string().min(1).optional(),
  /** Instead of the three files: a kubernetes.io/tls Secret mounted as a directory (tls.crt, tls.key, ca.crt). */
  CONTROL_PLANE_MESH_CA_DIR: z.string().min(1).optional(),
  /** Workload identities are spiffe://<this>/ns/<namespace>/sa/<service account>. */
  CONTROL_PLANE_MESH_TRUST_DOMAIN: z
    .string()
    .default('cluster.local')
    .refine(isTrustDomain, { message: 'expected a lower-case DNS name such as cluster.local' }),
  /** Lifetime of a workload certificate, 5m to 7d. */
  CONTROL_PLANE_MESH_CERT_TTL: envDuration('1h').refine((ms) => ms >= minTtlMs && ms <= maxTtlMs, {
    message: 'expected a duration from 5m to 7d',
  }),
  /** Fraction of its lifetime after which a workload certificate is replaced. */
  CONTROL_PLANE_MESH_CERT_RENEW_AT: z
    .string()
    .default('0.5')
    .refine((v) => /^0?\.\d+$/.test(v) && Number(v) >= 0.1 && Number(v) <= 0.9, {
      message: 'expected a fraction from 0.1 to 0.9, such as 0.5',
    })
    .transform(Number),
  /** How often the CA files are checked for a change. */
  CONTROL_PLANE_MESH_CA_POLL: envDuration('5s'),
};

type MeshCaConfig = z.output<z.ZodObject<typeof meshCaConfigFields>>;

/** For the configuration's superRefine: the three files together, or the directory, never both. */
export function checkMeshCaConfig(config: MeshCaConfig, ctx: z.RefinementCtx): void {
  const files = [
    [meshCaVariables.certFile, config.CONTROL_PLANE_MESH_CA_CERT_FILE],
    [meshCaVariables.keyFile, config.CONTROL_PLANE_MESH_CA_KEY_FILE],
    [meshCaVariables.bundleFile, config.CONTROL_PLANE_MESH_CA_BUNDLE_FILE],
  ] as const;
  const given = files.filter(([, value]) => value !== undefined).map(([name]) => name);
  if (given.length > 0 && config.CONTROL_PLANE_MESH_CA_DIR !== undefined)
    ctx.addIssue({
      code: 'custom',
      path: [meshCaVariables.dir],
      message: `set either ${meshCaVariables.dir} or the three files (${given.join(', ')} given), not both`,
    });
  else if (given.length > 0 && given.length < files.length)
    for (const [name, value] of files)
      if (value === undefined)
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `required with ${given.join(' and ')} (the mesh CA needs its certificate, its key and the trust bundle)`,
        });
}

/** Where the configuration says the CA is, or undefined when no mesh CA is configured. */
export function caSourceOf(config: MeshCaConfig, cwd: string = process.cwd()): CaSource | undefined {
  if (config.CONTROL_PLANE_MESH_CA_DIR)
    return { kind: 'directory', dir: resolve(cwd, config.CONTROL_PLANE_MESH_CA_DIR) };
  const { CONTROL_PLANE_MESH_CA_CERT_FILE: cert, CONTROL_PLANE_MESH_CA_KEY_FILE: key } = config;
  const bundle = config.CONTROL_PLANE_MESH_CA_BUNDLE_FILE;
  return cert && key && bundle
    ? { kind: 'files', certFile: resolve(cwd, cert), keyFile: resolve(cwd, key), bundleFile: resolve(cwd, bundle) }
    : undefined;
}

/**
 * The mesh CA the configuration describes, loaded and checked (a ConfigError names the variable
 * of a bad file), or undefined when none is configured. Call close() on shutdown.
 */
export function createMeshCaFromConfig(
  config: MeshCaConfig,
  deps: { logger: Logger; registry: Registry; cwd?: string } & Pick<
    MeshCaOptions,
    'now' | 'schedule' | 'pollIntervalMs'
  >,
): MeshCa | undefined {
  const source = caSourceOf(config, deps.cwd);
  if (!source) return undefined;
  return new MeshCa({
    source,
    trustDomain: config.CONTROL_PLANE_MESH_TRUST_DOMAIN,
    ttlMs: config.CONTROL_PLANE_MESH_CERT_TTL,
    renewAt: config.CONTROL_PLANE_MESH_CERT_RENEW_AT,
    pollIntervalMs: deps.pollIntervalMs ?? config.CONTROL_PLANE_MESH_CA_POLL,
    logger: deps.logger,
    registry: deps.registry,
    ...(deps.now ? { now: deps.now } : {}),
    ...(deps.schedule ? { schedule: deps.schedule } : {}),
  });
}
