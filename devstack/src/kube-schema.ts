import * as certManager from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import * as admissionregistration from 'kubernetes-models/admissionregistration.k8s.io/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as core from 'kubernetes-models/v1';
import type { ZodType } from 'zod';
import { certificateRequestPolicySchema } from './certificate-request-policy-schema';

// Offline schema validation of Kubernetes objects (the manifests in k8s/, the pods the injector
// patches). kubernetes-models checks types, enums and required fields but, like the OpenAPI
// schemas it is generated from, lets unknown fields through: the API server would then drop a
// misspelt `readinessprobe` silently. So the object is validated through a proxy that records
// every property the schema's validator reads; a property it never read is not in the schema.

type ModelClass = { apiVersion: string; kind: string; prototype: { validate(): void } };

const models = new Map<string, ModelClass>();
for (const group of [
  core,
  apps,
  autoscaling,
  networking,
  policy,
  rbac,
  admissionregistration,
  monitoring,
  certManager,
]) {
  for (const value of Object.values(group)) {
    const model = value as Partial<ModelClass>;
    if (typeof value === 'function' && typeof model.apiVersion === 'string' && typeof model.kind === 'string')
      models.set(`${model.apiVersion}/${model.kind}`, model as ModelClass);
  }
}

// Custom resources kubernetes-models has no model of: strict zod schemas written from their CRDs
// (unknown fields are refused by the schema itself).
const zodSchemas = new Map<string, ZodType>([
  ['policy.cert-manager.io/v1alpha1/CertificateRequestPolicy', certificateRequestPolicySchema],
]);

export interface SchemaProblem {
  /** JSON pointer into the object, e.g. /spec/template/spec/containers/0/readinessprobe. */
  path: string;
  message: string;
}

/** The kinds this module can check, as `apiVersion/kind`. */
export function knownKinds(): string[] {
  return [...models.keys(), ...zodSchemas.keys()].sort();
}

/**
 * Problems of one object against the schema of its apiVersion/kind: schema errors and
 * unknown fields. An empty list means valid. An unknown apiVersion/kind is itself a problem.
 */
export function validateObject(object: unknown): SchemaProblem[] {
  if (!isRecord(object)) return [{ path: '', message: 'not an object' }];
  const key = `${String(object.apiVersion)}/${String(object.kind)}`;
  const schema = zodSchemas.get(key);
  if (schema) return zodProblems(schema, object);
  const model = models.get(key);
  if (!model) return [{ path: '', message: `no schema for ${key}` }];
  const read = new Map<object, Set<PropertyKey>>();
  const problems: SchemaProblem[] = [];
  try {
    model.prototype.validate.call(track(object, read));
  } catch (error) {
    const details = (error as { errors?: Array<{ instancePath?: string; message?: string }> }).errors;
    if (details?.length)
      for (const e of details) problems.push({ path: e.instancePath ?? '', message: e.message ?? 'invalid' });
    else problems.push({ path: '', message: error instanceof Error ? error.message : String(error) });
  }
  collectUnread(object, '', read, problems);
  return problems;
}

function zodProblems(schema: ZodType, object: unknown): SchemaProblem[] {
  const result = schema.safeParse(object);
  if (result.success) return [];
  return result.error.issues.flatMap((issue) => {
    const at = pointer(issue.path);
    if (issue.code === 'unrecognized_keys')
      return issue.keys.map((k) => ({ path: `${at}/${pointerSegment(k)}`, message: 'unknown field' }));
    return [{ path: at, message: issue.message }];
  });
}

const pointerSegment = (segment: string) => segment.replaceAll('~', '~0').replaceAll('/', '~1');
const pointer = (path: PropertyKey[]) => path.map((p) => `/${pointerSegment(String(p))}`).join('');

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function track(value: unknown, read: Map<object, Set<PropertyKey>>): unknown {
  if (typeof value !== 'object' || value === null) return value;
  return new Proxy(value, {
    get(t, property, receiver) {
      if (!read.has(t)) read.set(t, new Set());
      read.get(t)?.add(property);
      const inner = Reflect.get(t, property, receiver);
      return typeof inner === 'object' && inner !== null ? track(inner, read) : inner;
    },
  });
}

function collectUnread(value: unknown, path: string, read: Map<object, Set<PropertyKey>>, out: SchemaProblem[]) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      collectUnread(item, `${path}/${i}`, read, out);
    });
    return;
  }
  if (!isRecord(value)) return;
  const seen = read.get(value);
  for (const [key, inner] of Object.entries(value)) {
    const at = `${path}/${pointerSegment(key)}`;
    if (!seen?.has(key)) {
      out.push({ path: at, message: 'unknown field' });
      continue;
    }
    collectUnread(inner, at, read, out);
  }
}

/** One line per problem, for an assertion message. */
export function describeProblems(name: string, problems: SchemaProblem[]): string {
  return problems.map((p) => `${name}${p.path || '/'}: ${p.message}`).join('\n');
}
