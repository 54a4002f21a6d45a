import { describe, expect, it } from 'vitest';
import { operationalProblems, podSecurityRestrictedProblems } from './kube-policy';
import { validateObject } from './kube-schema';

const container = {
  name: 'app',
  image: 'registry.example/app:1',
  resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1', memory: '128Mi' } },
  securityContext: {
    runAsNonRoot: true,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  },
  livenessProbe: { httpGet: { path: '/healthz', port: 8080 }, failureThreshold: 3 },
  readinessProbe: { httpGet: { path: '/readyz', port: 8080 } },
};
const pod = (spec: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'p', labels: { a: 'b' }, annotations: { 'x/y': 'z' } },
  spec: { containers: [container], ...spec },
});

describe('validateObject', () => {
  it('accepts a valid object, maps of labels and annotations included', () => {
    expect(validateObject(pod())).toEqual([]);
  });

  it.each([
    [
      'a misspelt container field',
      pod({ containers: [{ ...container, readinessprobe: {} }] }),
      '/spec/containers/0/readinessprobe',
    ],
    [
      'an unknown field deep in a probe',
      pod({ containers: [{ ...container, livenessProbe: { httpGet: { path: '/', port: 1, verb: 'GET' } } }] }),
      '/spec/containers/0/livenessProbe/httpGet/verb',
    ],
    ['an unknown top-level field', { ...pod(), status2: {} }, '/status2'],
  ])('refuses %s with its JSON pointer', (_name, object, path) => {
    expect(validateObject(object)).toEqual([{ path, message: 'unknown field' }]);
  });

  it('refuses unknown fields in custom resources too (PrometheusRule, Certificate)', () => {
    const rule = {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PrometheusRule',
      metadata: { name: 'r' },
      spec: { groups: [{ name: 'g', rules: [{ alert: 'A', expr: 'up == 0', for: '1m', severity: 'P0' }] }] },
    };
    expect(validateObject(rule)).toEqual([{ path: '/spec/groups/0/rules/0/severity', message: 'unknown field' }]);
    const certificate = {
      apiVersion: 'cert-manager.io/v1',
      kind: 'Certificate',
      metadata: { name: 'c' },
      spec: { secretName: 's', issuerRef: { name: 'i' }, dnsName: ['x'] },
    };
    expect(validateObject(certificate)).toEqual([{ path: '/spec/dnsName', message: 'unknown field' }]);
  });

  it('checks CertificateRequestPolicies (approver-policy) against their CRD, refusing unknown fields', () => {
    const policy = (spec: Record<string, unknown>) => ({
      apiVersion: 'policy.cert-manager.io/v1alpha1',
      kind: 'CertificateRequestPolicy',
      metadata: { name: 'p', labels: { a: 'b' } },
      spec: { selector: { issuerRef: { name: 'i', kind: 'Issuer' } }, ...spec },
    });
    const valid = policy({
      allowed: {
        commonName: { required: true, validations: [{ rule: "self in ['a']", message: 'a only' }] },
        dnsNames: { values: ['a.example'] },
        isCA: false,
        usages: ['server auth'],
      },
      constraints: { minDuration: '1h', maxDuration: '2160h', privateKey: { algorithm: 'ECDSA', minSize: 256 } },
    });
    expect(validateObject(valid)).toEqual([]);
    expect(validateObject(policy({ allowed: { dnsName: { values: ['x'] } } }))).toEqual([
      { path: '/spec/allowed/dnsName', message: 'unknown field' },
    ]);
    expect(validateObject({ ...valid, metadata: { name: 'p', namespace: 'ns' } })).toEqual([
      { path: '/metadata/namespace', message: 'unknown field' },
    ]);
    expect(validateObject(policy({ allowed: { usages: ['server-auth'] } }))).toMatchObject([
      { path: '/spec/allowed/usages/0' },
    ]);
    expect(validateObject(policy({ constraints: { maxDuration: '90d' } }))).toEqual([
      { path: '/spec/constraints/maxDuration', message: 'must be a Go duration such as 2160h' },
    ]);
    expect(validateObject({ ...valid, spec: { selector: {} } })).toEqual([
      { path: '/spec/selector', message: 'selector needs issuerRef or namespace' },
    ]);
  });

  it('reports schema errors and kinds it has no schema for', () => {
    expect(validateObject(pod({ containers: [{ name: 'a', imagePullPolicy: 'Sometimes' }] }))).toContainEqual({
      path: '/spec/containers/0/imagePullPolicy',
      message: 'must be equal to one of the allowed values',
    });
    expect(validateObject({ apiVersion: 'example.com/v1', kind: 'Widget' })).toEqual([
      { path: '', message: 'no schema for example.com/v1/Widget' },
    ]);
  });
});

describe('Pod Security restricted and operational checks', () => {
  it('passes a restricted, probed, limited pod', () => {
    expect(podSecurityRestrictedProblems(pod().spec)).toEqual([]);
    expect(operationalProblems(pod().spec)).toEqual([]);
  });

  it('names each violation with its container', () => {
    const bad = {
      hostNetwork: true,
      volumes: [{ name: 'h', hostPath: { path: '/' } }],
      containers: [
        {
          name: 'app',
          securityContext: { privileged: true, capabilities: { add: ['SYS_ADMIN'] } },
          ports: [{ containerPort: 80, hostPort: 80 }],
          livenessProbe: { failureThreshold: 10 },
        },
      ],
    };
    expect(podSecurityRestrictedProblems(bad)).toEqual([
      'spec.hostNetwork is true',
      'volume h: type hostPath is not allowed',
      'containers[app]: privileged',
      'containers[app]: allowPrivilegeEscalation must be false',
      'containers[app]: runAsNonRoot must be true (container or pod)',
      'containers[app]: seccompProfile.type must be RuntimeDefault or Localhost (container or pod)',
      'containers[app]: capabilities.drop must include ALL',
      'containers[app]: capability SYS_ADMIN added',
      'containers[app]: hostPort 80',
    ]);
    expect(operationalProblems(bad)).toEqual([
      'containers[app]: readOnlyRootFilesystem must be true',
      'containers[app]: resources.requests.cpu missing',
      'containers[app]: resources.requests.memory missing',
      'containers[app]: resources.limits.cpu missing',
      'containers[app]: resources.limits.memory missing',
      'containers[app]: readinessProbe missing',
      'containers[app]: livenessProbe.failureThreshold must be 3',
    ]);
  });

  it('takes runAsNonRoot and seccomp from the pod level, and spares run-once init containers the probes', () => {
    const spec = {
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
      initContainers: [{ ...container, name: 'migrate', livenessProbe: undefined, readinessProbe: undefined }],
      containers: [
        {
          ...container,
          securityContext: {
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ['ALL'] },
          },
        },
      ],
    };
    expect(podSecurityRestrictedProblems(spec)).toEqual([]);
    expect(operationalProblems(spec)).toEqual([]);
  });
});
