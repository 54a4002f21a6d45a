// The definition's mesh section → MeshIR: each mesh service's SPIFFE id, ports, cluster and
// allow rules with the callers resolved to SPIFFE ids. Cross-references are checked here:
// a mesh service must be a service of the definition, a caller the ingress or a mesh service.
// A mesh service's cluster (the ingress's, and every allowed caller's sidecar's) reaches its
// sidecar's inbound listener at its `address` over the mesh's mutual TLS instead of `endpoints`.
import { parseDuration } from '../definition/duration';
import { parseHostPort } from '../definition/endpoint';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import { spiffeIdOf } from '../mesh/contract';
import { discovery } from './clusters';
import { serviceClusterName } from './names';
import { checkRouteList, type RouteListContext } from './route-list';
import { retries } from './routes';
import type { ClusterIR, MeshAllowIR, MeshIR, MeshRouteIR, MeshServiceIR } from './types';

type MeshDefinition = NonNullable<GatewayDefinition['mesh']>;
type MeshRouteInput = MeshDefinition['services'][string]['routes'][number];

/** `clusters` (the ingress's, from buildClusters) get the mesh services' sidecar address and mTLS. */
export function buildMesh(
  definition: GatewayDefinition,
  clusters: ClusterIR[],
  errors: FieldError[],
  checks: RouteListContext,
): MeshIR | undefined {
  const mesh = definition.mesh;
  if (mesh === undefined) return undefined;
  const { trustDomain } = mesh;
  const ingressSpiffeId = spiffeIdOf(trustDomain, mesh.ingress.namespace, mesh.ingress.serviceAccount);
  const spiffeIds = new Map<string, string>([['ingress', ingressSpiffeId]]);
  const names = Object.keys(mesh.services).sort();
  for (const name of names) {
    const service = mesh.services[name];
    if (service === undefined) continue;
    spiffeIds.set(name, spiffeIdOf(trustDomain, service.namespace, service.serviceAccount ?? name));
  }
  const services: MeshServiceIR[] = [];
  for (const name of names) {
    const service = mesh.services[name];
    const at = `mesh.services.${name}`;
    if (service === undefined) continue;
    if (name.length > 63) {
      // Its view, sidecar:<name>, and its DNS name take one RFC 1123 label.
      errors.push({ path: at, message: 'a mesh service name is at most 63 characters (one DNS label)' });
      continue;
    }
    const upstream = definition.services[name];
    if (upstream === undefined) {
      errors.push({ path: at, message: `names no service in services: "${name}"` });
      continue;
    }
    if (upstream.tls !== undefined) {
      errors.push({
        path: `services.${name}.tls`,
        message: 'a mesh service is reached over the mesh mutual TLS (mesh.services); remove tls',
      });
    }
    const ports = [service.appPort, service.inboundPort, service.outboundPort];
    if (new Set(ports).size !== ports.length) {
      errors.push({ path: at, message: 'appPort, inboundPort and outboundPort must be three different ports' });
    }
    const addressText = service.address ?? `${name}.${service.namespace}.svc.cluster.local:${service.inboundPort}`;
    const address = parseHostPort(addressText);
    if ('problem' in address) {
      // A default built from a valid namespace is always valid; a given address was checked by the schema.
      errors.push({ path: `${at}.address`, message: address.problem });
      continue;
    }
    const found = discovery([addressText]);
    const clusterName = serviceClusterName(name);
    const index = clusters.findIndex((cluster) => cluster.name === clusterName);
    const ingressCluster = clusters[index];
    if (ingressCluster === undefined) throw new Error(`no cluster ${clusterName}`);
    const spiffeId = spiffeIds.get(name) as string;
    const cluster: ClusterIR = { ...ingressCluster, ...found, tls: undefined, meshPeer: spiffeId };
    clusters[index] = cluster;

    const allow: MeshAllowIR[] = [];
    for (const [ruleIndex, rule] of service.allow.entries()) {
      const ruleAt = `${at}.allow[${ruleIndex}]`;
      const principals: string[] = [];
      for (const [callerIndex, caller] of rule.from.entries()) {
        const id = spiffeIds.get(caller);
        if (id === undefined) {
          errors.push({
            path: `${ruleAt}.from[${callerIndex}]`,
            message: `names neither ingress nor a service of mesh.services: "${caller}"`,
          });
        } else if (caller === name) {
          errors.push({
            path: `${ruleAt}.from[${callerIndex}]`,
            message: 'a service does not call itself through the mesh',
          });
        } else principals.push(id);
      }
      allow.push({
        principals: [...new Set(principals)],
        callers: [...new Set(rule.from)],
        methods: [...new Set(rule.methods ?? [])],
        paths: (rule.paths ?? []).map((path) =>
          path.endsWith('/*') ? { kind: 'prefix', value: path.slice(0, -1) } : { kind: 'exact', value: path },
        ),
      });
    }
    services.push({
      name,
      spiffeId,
      namespace: service.namespace,
      appPort: service.appPort,
      inboundPort: service.inboundPort,
      outboundPort: service.outboundPort,
      cluster,
      timeoutMs: parseDuration(upstream.timeout) ?? 15_000,
      retries: retries(service.retries, `${at}.retries`, errors),
      allow,
      routes: meshRoutes(name, service.routes, `${at}.routes`, checks, errors),
    });
  }
  return { trustDomain, ingressSpiffeId, services };
}

/** The mesh services `caller` ('ingress' or a service name) may call, sorted by name. */
export function calleesOf(mesh: MeshIR, caller: string): MeshServiceIR[] {
  return mesh.services.filter((service) => service.allow.some((rule) => rule.callers.includes(caller)));
}

/**
 * A mesh service's routes, checked as the ingress's are (route-list.ts). A mesh route has no
 * `auth`: one that requires permissions needs the end user the ingress verified, one that
 * requires none lets any allowed caller in, with or without an end user (as auth: optional).
 */
function meshRoutes(
  service: string,
  input: readonly MeshRouteInput[],
  at: string,
  context: RouteListContext,
  errors: FieldError[],
): MeshRouteIR[] {
  const routes = input.map(
    (route) => ({ ...route, auth: route.require.length > 0 ? 'required' : 'optional' }) as const,
  );
  return checkRouteList(routes, at, context, errors).map((route) => ({
    id: `${service}:${route.id}`,
    methods: route.match.methods,
    // The short form only makes exact and prefix matches.
    path: { kind: route.match.path.kind === 'prefix' ? 'prefix' : 'exact', value: route.match.path.value },
    permissions: route.permissions,
    limits: route.limits,
  }));
}
