// Policy checks on pod specs, offline: the Pod Security Standards "restricted" profile (as the
// API server's PodSecurity admission enforces it) plus Sekisho's own rules for its manifests
// and the injected sidecar. Each problem names the container and the field.

type Json = Record<string, unknown>;

const restrictedVolumeTypes = new Set([
  'configMap',
  'csi',
  'downwardAPI',
  'emptyDir',
  'ephemeral',
  'persistentVolumeClaim',
  'projected',
  'secret',
]);

const obj = (value: unknown): Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : {};
const list = (value: unknown): Json[] => (Array.isArray(value) ? value.map(obj) : []);

/** Every container of a pod spec with the field it lives in. */
export function containersOf(spec: Json): Array<{ where: string; container: Json }> {
  return (['initContainers', 'containers', 'ephemeralContainers'] as const).flatMap((field) =>
    list(spec[field]).map((container) => ({ where: `${field}[${String(container.name)}]`, container })),
  );
}

/** Violations of Pod Security "restricted" (latest); empty when the spec passes. */
export function podSecurityRestrictedProblems(spec: Json): string[] {
  const problems: string[] = [];
  const pod = obj(spec.securityContext);
  for (const field of ['hostNetwork', 'hostPID', 'hostIPC'] as const)
    if (spec[field] === true) problems.push(`spec.${field} is true`);
  for (const volume of list(spec.volumes)) {
    const type = Object.keys(volume).find((key) => key !== 'name');
    if (type && !restrictedVolumeTypes.has(type))
      problems.push(`volume ${String(volume.name)}: type ${type} is not allowed`);
  }
  if (pod.runAsUser === 0) problems.push('spec.securityContext.runAsUser is 0');
  const podSeccomp = obj(pod.seccompProfile).type;
  if (podSeccomp !== undefined && podSeccomp !== 'RuntimeDefault' && podSeccomp !== 'Localhost')
    problems.push(`spec.securityContext.seccompProfile.type ${String(podSeccomp)}`);
  for (const { where, container } of containersOf(spec)) {
    const sc = obj(container.securityContext);
    if (sc.privileged === true) problems.push(`${where}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: allowPrivilegeEscalation must be false`);
    const nonRoot = sc.runAsNonRoot ?? pod.runAsNonRoot;
    if (nonRoot !== true) problems.push(`${where}: runAsNonRoot must be true (container or pod)`);
    if (sc.runAsUser === 0) problems.push(`${where}: runAsUser is 0`);
    const seccomp = obj(sc.seccompProfile).type ?? podSeccomp;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost')
      problems.push(`${where}: seccompProfile.type must be RuntimeDefault or Localhost (container or pod)`);
    const capabilities = obj(sc.capabilities);
    const drop = Array.isArray(capabilities.drop) ? capabilities.drop : [];
    if (!drop.includes('ALL')) problems.push(`${where}: capabilities.drop must include ALL`);
    const add = Array.isArray(capabilities.add) ? capabilities.add : [];
    for (const capability of add)
      if (capability !== 'NET_BIND_SERVICE') problems.push(`${where}: capability ${String(capability)} added`);
    for (const port of list(container.ports))
      if (port.hostPort !== undefined && port.hostPort !== 0)
        problems.push(`${where}: hostPort ${String(port.hostPort)}`);
  }
  return problems;
}

/**
 * Sekisho's rules on top: a read-only root filesystem, requests and limits of CPU and memory,
 * and, for long-running containers (not run-once init containers), liveness and readiness
 * probes, liveness restarting after 3 failures.
 */
export function operationalProblems(spec: Json): string[] {
  const problems: string[] = [];
  for (const { where, container } of containersOf(spec)) {
    const sc = obj(container.securityContext);
    if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: readOnlyRootFilesystem must be true`);
    const resources = obj(container.resources);
    for (const kind of ['requests', 'limits'] as const)
      for (const resource of ['cpu', 'memory'] as const)
        if (obj(resources[kind])[resource] === undefined)
          problems.push(`${where}: resources.${kind}.${resource} missing`);
    const runsOnce = where.startsWith('initContainers') && container.restartPolicy !== 'Always';
    if (runsOnce) continue;
    if (!container.readinessProbe) problems.push(`${where}: readinessProbe missing`);
    const liveness = obj(container.livenessProbe);
    if (!container.livenessProbe) problems.push(`${where}: livenessProbe missing`);
    else if ((liveness.failureThreshold ?? 3) !== 3)
      problems.push(`${where}: livenessProbe.failureThreshold must be 3`);
  }
  return problems;
}
