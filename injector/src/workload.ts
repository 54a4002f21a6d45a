import { z } from 'zod';
import type { AdmissionRequest } from './admission';
import {
  annotations,
  injectAnnotation,
  iptablesContainerName,
  proxyContainerName,
  statusAnnotation,
} from './annotations';
import type { InjectorConfig } from './config';
import { isQuantity, quantityValue } from './quantity';

// Decides whether a pod gets a sidecar and with which settings. Pure: the review and the
// injector's configuration in, a decision out.

const container = z.looseObject({
  name: z.string(),
  ports: z.array(z.looseObject({ containerPort: z.number(), protocol: z.string().optional() })).optional(),
});

/** The parts of a Pod the injector reads (the API server has validated the rest). */
export const podSchema = z.looseObject({
  metadata: z
    .looseObject({
      name: z.string().optional(),
      generateName: z.string().optional(),
      namespace: z.string().optional(),
      labels: z.record(z.string(), z.string()).optional(),
      annotations: z.record(z.string(), z.string()).optional(),
    })
    .optional(),
  spec: z.looseObject({
    hostNetwork: z.boolean().optional(),
    serviceAccountName: z.string().optional(),
    containers: z.array(container).min(1),
    initContainers: z.array(container).optional(),
    volumes: z.array(z.looseObject({ name: z.string() })).optional(),
  }),
});

export type Pod = z.output<typeof podSchema>;

/** Everything that names and tunes one pod's sidecar. */
export interface Workload {
  namespace: string;
  service: string;
  serviceAccount: string;
  spiffeId: string;
  /** The app's port the inbound listener forwards to; none for a pod that only calls others. */
  appPort?: number;
  inboundPort: number;
  outboundPort: number;
  traffic: 'explicit' | 'iptables';
  /** Where the control channel certificate comes from: csi-driver-spiffe (per pod) or the Secret sekisho-xds-<service>. */
  xdsIdentity: 'csi' | 'secret';
  logLevel: InjectorConfig['INJECTOR_PROXY_LOG_LEVEL'];
  resources: { requests: { cpu: string; memory: string }; limits: { cpu: string; memory: string } };
}

export type Decision =
  | { kind: 'inject'; pod: Pod; workload: Workload }
  /** Allowed unchanged; `warning` is shown to the user (kubectl prints admission warnings). */
  | { kind: 'skip'; reason: string; warning?: string }
  | { kind: 'deny'; message: string };

const serviceName = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const logLevels = ['trace', 'debug', 'info', 'warning', 'error', 'critical', 'off'] as const;

export function decide(request: AdmissionRequest, config: InjectorConfig): Decision {
  const isPod = request.kind.kind === 'Pod' && request.resource.resource === 'pods' && !request.subResource;
  if (!isPod)
    return {
      kind: 'skip',
      reason: 'not a pod',
      warning: `sekisho-injector: not injected: only pods are handled, got ${request.kind.kind} (${request.resource.resource})`,
    };
  if (request.operation !== 'CREATE') return { kind: 'skip', reason: `operation ${request.operation}` };
  const parsed = podSchema.safeParse(request.object);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      kind: 'skip',
      reason: 'unreadable pod',
      warning: `sekisho-injector: not injected: request.object.${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`,
    };
  }
  const pod = parsed.data;
  const namespace = request.namespace || pod.metadata?.namespace || '';
  if (!namespace) return { kind: 'deny', message: 'sekisho-injector: the request names no namespace' };
  if (namespace === 'kube-system' || namespace === config.INJECTOR_SYSTEM_NAMESPACE)
    return { kind: 'skip', reason: `namespace ${namespace} is never injected` };
  if (config.INJECTOR_EXCLUDED_NAMESPACES.includes(namespace))
    return { kind: 'skip', reason: `namespace ${namespace} is excluded (INJECTOR_EXCLUDED_NAMESPACES)` };
  const podAnnotations = pod.metadata?.annotations ?? {};
  const opt = podAnnotations[injectAnnotation];
  if (opt === 'false') return { kind: 'skip', reason: `annotation ${injectAnnotation}=false` };
  if (opt !== undefined && opt !== 'true')
    return {
      kind: 'deny',
      message: `sekisho-injector: annotation ${injectAnnotation}: expected "true" or "false", got ${JSON.stringify(opt)}`,
    };
  if (pod.spec.hostNetwork)
    return { kind: 'skip', reason: 'hostNetwork pod (the sidecar would share the node network)' };
  const names = [...pod.spec.containers, ...(pod.spec.initContainers ?? [])].map((c) => c.name);
  if (names.includes(proxyContainerName) || names.includes(iptablesContainerName) || podAnnotations[statusAnnotation])
    return { kind: 'skip', reason: 'already injected' };

  const problems: string[] = [];
  const labels = pod.metadata?.labels ?? {};
  const serviceAccount = pod.spec.serviceAccountName || 'default';
  const service = podAnnotations[annotations.service] ?? labels['app.kubernetes.io/name'] ?? labels.app;
  if (service === undefined)
    problems.push(
      `no service name: set the label app.kubernetes.io/name (or app) or the annotation ${annotations.service}`,
    );
  else if (!serviceName.test(service))
    problems.push(
      `service name ${JSON.stringify(service)} (from ${annotations.service}, app.kubernetes.io/name or app): expected lower-case-with-dashes, at most 63 characters`,
    );

  const port = (annotation: string, fallback: number | undefined): number | undefined => {
    const value = podAnnotations[annotation];
    if (value === undefined) return fallback;
    if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
      problems.push(`annotation ${annotation}: expected a port 1-65535, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return Number(value);
  };
  const firstPort = pod.spec.containers.flatMap((c) => c.ports ?? []).find((p) => (p.protocol ?? 'TCP') === 'TCP');
  const appPort = port(annotations.appPort, firstPort?.containerPort);
  const inboundPort = port(annotations.inboundPort, config.INJECTOR_INBOUND_PORT) ?? config.INJECTOR_INBOUND_PORT;
  const outboundPort = port(annotations.outboundPort, config.INJECTOR_OUTBOUND_PORT) ?? config.INJECTOR_OUTBOUND_PORT;
  const taken = new Map<number, string>([
    [config.INJECTOR_HEALTH_PORT, 'the health port'],
    [config.INJECTOR_PROXY_ADMIN_PORT, 'the proxy admin port'],
  ]);
  for (const [what, value] of [
    ['inbound', inboundPort],
    ['outbound', outboundPort],
    ['app', appPort],
  ] as const) {
    if (value === undefined) continue;
    const other = taken.get(value);
    if (other)
      problems.push(`the ${what} port ${value} equals ${other}; every port of the sidecar and the app must differ`);
    taken.set(value, `the ${what} port`);
  }
  const quantity = (annotation: string, fallback: string) => {
    const value = podAnnotations[annotation];
    if (value === undefined) return fallback;
    if (!isQuantity(value)) {
      problems.push(
        `annotation ${annotation}: expected a quantity such as 100m or 128Mi, got ${JSON.stringify(value)}`,
      );
      return fallback;
    }
    return value;
  };
  const resources = {
    requests: {
      cpu: quantity(annotations.cpuRequest, config.INJECTOR_PROXY_CPU_REQUEST),
      memory: quantity(annotations.memoryRequest, config.INJECTOR_PROXY_MEMORY_REQUEST),
    },
    limits: {
      cpu: quantity(annotations.cpuLimit, config.INJECTOR_PROXY_CPU_LIMIT),
      memory: quantity(annotations.memoryLimit, config.INJECTOR_PROXY_MEMORY_LIMIT),
    },
  };
  // The API server refuses a container whose request exceeds its limit; say which setting did it.
  for (const resource of ['cpu', 'memory'] as const) {
    const request = quantityValue(resources.requests[resource]) ?? 0;
    const limit = quantityValue(resources.limits[resource]) ?? Number.POSITIVE_INFINITY;
    if (request > limit) {
      const [requestName, limitName] =
        resource === 'cpu'
          ? [annotations.cpuRequest, annotations.cpuLimit]
          : [annotations.memoryRequest, annotations.memoryLimit];
      problems.push(
        `the proxy's ${resource} request ${resources.requests[resource]} exceeds its limit ${resources.limits[resource]} (annotations ${requestName} / ${limitName})`,
      );
    }
  }
  const logLevel = podAnnotations[annotations.logLevel] ?? config.INJECTOR_PROXY_LOG_LEVEL;
  if (!(logLevels as readonly string[]).includes(logLevel))
    problems.push(
      `annotation ${annotations.logLevel}: expected one of ${logLevels.join(', ')}, got ${JSON.stringify(logLevel)}`,
    );
  const traffic = podAnnotations[annotations.traffic] ?? 'explicit';
  if (traffic !== 'explicit' && traffic !== 'iptables')
    problems.push(`annotation ${annotations.traffic}: expected explicit or iptables, got ${JSON.stringify(traffic)}`);
  else if (traffic === 'iptables' && !config.INJECTOR_ALLOW_IPTABLES)
    problems.push(
      `annotation ${annotations.traffic}=iptables: not allowed by this injector (INJECTOR_ALLOW_IPTABLES=false)`,
    );
  else if (traffic === 'iptables' && appPort === undefined)
    problems.push(
      `annotation ${annotations.traffic}=iptables needs the app's port (a containerPort or ${annotations.appPort})`,
    );

  const xdsIdentity = podAnnotations[annotations.xdsIdentity] ?? config.INJECTOR_XDS_IDENTITY;
  if (xdsIdentity !== 'csi' && xdsIdentity !== 'secret')
    problems.push(`annotation ${annotations.xdsIdentity}: expected csi or secret, got ${JSON.stringify(xdsIdentity)}`);

  if (problems.length) return { kind: 'deny', message: `sekisho-injector: ${problems.join('; ')}` };
  return {
    kind: 'inject',
    pod,
    workload: {
      namespace,
      service: service as string,
      serviceAccount,
      spiffeId: `spiffe://${config.INJECTOR_TRUST_DOMAIN}/ns/${namespace}/sa/${serviceAccount}`,
      ...(appPort === undefined ? {} : { appPort }),
      inboundPort,
      outboundPort,
      traffic: traffic as Workload['traffic'],
      xdsIdentity: xdsIdentity as Workload['xdsIdentity'],
      logLevel: logLevel as Workload['logLevel'],
      resources,
    },
  };
}
