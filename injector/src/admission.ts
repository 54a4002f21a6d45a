import { z } from 'zod';

// The admission.k8s.io/v1 AdmissionReview envelope: what the API server sends and what it
// expects back. Only the fields the injector reads are checked; everything else the API server
// may add in later versions is let through (loose objects).

const groupVersionKind = z.looseObject({ group: z.string(), version: z.string(), kind: z.string() });

export const admissionReviewSchema = z.looseObject({
  apiVersion: z.literal('admission.k8s.io/v1', { error: 'expected apiVersion admission.k8s.io/v1' }),
  kind: z.literal('AdmissionReview', { error: 'expected kind AdmissionReview' }),
  request: z.looseObject({
    uid: z.string({ error: 'required: the request uid' }).min(1, 'required: the request uid'),
    kind: groupVersionKind,
    resource: z.looseObject({ group: z.string(), version: z.string(), resource: z.string() }),
    subResource: z.string().optional(),
    name: z.string().optional(),
    namespace: z.string().optional(),
    operation: z.enum(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']),
    object: z.unknown().optional(),
    dryRun: z.boolean().optional(),
  }),
});

export type AdmissionRequest = z.output<typeof admissionReviewSchema>['request'];

export type JsonPatchOperation =
  | { op: 'add' | 'replace'; path: string; value: unknown }
  | { op: 'remove'; path: string }
  | { op: 'test'; path: string; value: unknown };

export type ParsedReview = { ok: true; request: AdmissionRequest } | { ok: false; message: string };

/** Parses the body of a review; a failure names the field. Never throws. */
export function parseAdmissionReview(body: string): ParsedReview {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (error) {
    return { ok: false, message: `body is not JSON: ${(error as Error).message}` };
  }
  const parsed = admissionReviewSchema.safeParse(json);
  if (parsed.success) return { ok: true, request: parsed.data.request };
  const issue = parsed.error.issues[0];
  const path = issue?.path.length ? issue.path.join('.') : '(review)';
  return { ok: false, message: `not an admission.k8s.io/v1 AdmissionReview: ${path}: ${issue?.message ?? 'invalid'}` };
}

export type AdmissionResponse =
  | { uid: string; allowed: true; patchType?: 'JSONPatch'; patch?: string; warnings?: string[] }
  | { uid: string; allowed: false; status: { code: number; message: string } };

export function allow(uid: string, patch?: JsonPatchOperation[], warnings?: string[]): AdmissionResponse {
  return {
    uid,
    allowed: true,
    ...(patch?.length
      ? { patchType: 'JSONPatch' as const, patch: Buffer.from(JSON.stringify(patch)).toString('base64') }
      : {}),
    ...(warnings?.length ? { warnings } : {}),
  };
}

export function deny(uid: string, message: string): AdmissionResponse {
  return { uid, allowed: false, status: { code: 400, message } };
}

export function reviewResponse(response: AdmissionResponse) {
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
}
