import { z } from 'zod';

// cert-manager approver-policy's CertificateRequestPolicy (policy.cert-manager.io/v1alpha1,
// cluster-scoped), written from its CRD (deploy/crds/policy.cert-manager.io_certificaterequestpolicies.yaml
// of cert-manager/approver-policy) for the fields Sekisho's policies use, every object strict: a
// field the CRD has but Sekisho does not use (allowed.subject, otherNames, plugins...) is refused
// like a misspelt one, so adding one is a deliberate change here. kubernetes-models has no model
// of this CRD, hence a schema of our own.

// The CRD's enum of cert-manager key usages.
export const keyUsages = [
  'signing',
  'digital signature',
  'content commitment',
  'key encipherment',
  'key agreement',
  'data encipherment',
  'cert sign',
  'crl sign',
  'encipher only',
  'decipher only',
  'any',
  'server auth',
  'client auth',
  'code signing',
  'email protection',
  's/mime',
  'ipsec end system',
  'ipsec tunnel',
  'ipsec user',
  'timestamping',
  'ocsp signing',
  'microsoft sgc',
  'netscape sgc',
] as const;

// A Go time.Duration as metav1.Duration marshals it (the CRD says only `type: string`; the
// webhook parses it): units h, m, s, ms, combined, e.g. 2160h or 1h30m.
const duration = z.string().regex(/^(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+$/, 'must be a Go duration such as 2160h');

// ValidationRule: a CEL rule over `self` (and `cr.namespace`, `cr.name`).
const validationRule = z.strictObject({ rule: z.string().min(1), message: z.string().optional() });

const allowedString = z.strictObject({
  value: z.string().optional(),
  required: z.boolean().optional(),
  validations: z.array(validationRule).optional(),
});

const allowedStringSlice = z.strictObject({
  values: z.array(z.string()).optional(),
  required: z.boolean().optional(),
  validations: z.array(validationRule).optional(),
});

const allowed = z.strictObject({
  commonName: allowedString.optional(),
  dnsNames: allowedStringSlice.optional(),
  ipAddresses: allowedStringSlice.optional(),
  uris: allowedStringSlice.optional(),
  emailAddresses: allowedStringSlice.optional(),
  isCA: z.boolean().optional(),
  usages: z.array(z.enum(keyUsages)).optional(),
});

const constraints = z.strictObject({
  minDuration: duration.optional(),
  maxDuration: duration.optional(),
  privateKey: z
    .strictObject({
      algorithm: z.enum(['RSA', 'ECDSA', 'Ed25519']).optional(),
      minSize: z.number().int().optional(),
      maxSize: z.number().int().optional(),
    })
    .optional(),
});

const selector = z
  .strictObject({
    issuerRef: z
      .strictObject({ name: z.string().optional(), kind: z.string().optional(), group: z.string().optional() })
      .optional(),
    namespace: z
      .strictObject({
        matchNames: z.array(z.string()).optional(),
        matchLabels: z.record(z.string(), z.string()).optional(),
      })
      .optional(),
  })
  // The approver-policy webhook refuses a selector with neither.
  .refine((s) => s.issuerRef !== undefined || s.namespace !== undefined, {
    message: 'selector needs issuerRef or namespace',
  });

export const certificateRequestPolicySchema = z.strictObject({
  apiVersion: z.literal('policy.cert-manager.io/v1alpha1'),
  kind: z.literal('CertificateRequestPolicy'),
  // Cluster-scoped: no namespace. Only the metadata Sekisho writes (kustomize adds the labels).
  metadata: z.strictObject({
    name: z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  }),
  spec: z.strictObject({
    allowed: allowed.optional(),
    constraints: constraints.optional(),
    selector,
  }),
});

export type CertificateRequestPolicy = z.infer<typeof certificateRequestPolicySchema>;
