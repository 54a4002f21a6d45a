// Definition services and policy services → ClusterIR: discovery, protocol, TLS and the
// resilience settings (health checks, outlier detection, circuit breakers, load balancing).
import type { z } from 'zod';
import { parseDuration } from '../definition/duration';
import { isIPv4, parseHostPort } from '../definition/endpoint';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import type { circuitBreakers, grpcHealthCheck, httpHealthCheck, outlierDetection } from '../definition/services';
import { extAuthzClusterName, rateLimitClusterName, serviceClusterName, threatDetectorClusterName } from './names';
import type { CircuitBreakersIR, ClusterIR, EndpointIR, HealthCheckIR, OutlierDetectionIR } from './types';

/** What every policy service's cluster is made of (ext-authz, rate limit, threat detector). */
type PolicyServiceInput = Omit<GatewayDefinition['policyServices']['extAuthz'], 'timeout'>;

/** Every upstream cluster (services and policy services), sorted by name. */
export function buildClusters(definition: GatewayDefinition, errors: FieldError[]): ClusterIR[] {
  const clusters: ClusterIR[] = [];
  for (const [name, service] of Object.entries(definition.services)) {
    const found = discovery(service.endpoints);
    clusters.push({
      name: serviceClusterName(name),
      ...found,
      connectTimeoutMs: ms(service.connectTimeout),
      protocol: service.protocol,
      tls: service.tls && upstreamTls(service.tls, found.endpoints, `services.${name}.tls`, errors),
      healthCheck: service.healthCheck === undefined ? undefined : httpHealthCheckIR(service.healthCheck),
      outlierDetection: service.outlierDetection && outlierDetectionIR(service.outlierDetection),
      circuitBreakers: service.circuitBreakers && circuitBreakersIR(service.circuitBreakers),
      loadBalancing: { policy: service.loadBalancing.policy, hashOn: service.loadBalancing.hashOn },
    });
  }
  const { extAuthz, rateLimit } = definition.policyServices;
  clusters.push(policyCluster(extAuthzClusterName, extAuthz), policyCluster(rateLimitClusterName, rateLimit));
  const { threatDetector } = definition.policyServices;
  if (threatDetector !== undefined) clusters.push(policyCluster(threatDetectorClusterName, threatDetector));
  return clusters.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The replicas of a policy service: `addresses`, or the single `address`. */
export function policyServiceAddresses(service: Pick<PolicyServiceInput, 'address' | 'addresses'>): string[] {
  return service.addresses ?? (service.address === undefined ? [] : [service.address]);
}

/** gRPC, so HTTP/2; health-checked with grpc.health.v1 unless turned off. */
function policyCluster(name: string, service: PolicyServiceInput): ClusterIR {
  return {
    name,
    ...discovery(policyServiceAddresses(service)),
    connectTimeoutMs: 1000,
    protocol: 'http2',
    tls: undefined,
    // The schema refuses `true`: only false (off) or settings reach here.
    healthCheck: typeof service.healthCheck === 'boolean' ? undefined : grpcHealthCheckIR(service.healthCheck),
    outlierDetection: service.outlierDetection && outlierDetectionIR(service.outlierDetection),
    circuitBreakers: service.circuitBreakers && circuitBreakersIR(service.circuitBreakers),
    loadBalancing: { policy: 'roundRobin', hashOn: undefined },
  };
}

export function discovery(addresses: readonly string[]): Pick<ClusterIR, 'discovery' | 'endpoints'> {
  const endpoints: EndpointIR[] = addresses.map((address) => {
    const parsed = parseHostPort(address);
    if ('problem' in parsed) throw new Error(`unvalidated endpoint: ${parsed.problem}`);
    return { host: parsed.host === 'localhost' ? '127.0.0.1' : parsed.host, port: parsed.port };
  });
  const allIp = endpoints.every((endpoint) => isIPv4(endpoint.host));
  return { discovery: allIp ? 'eds' : 'dns', endpoints };
}

/** The name to verify defaults to the endpoints' one DNS name; IP endpoints must say it. */
function upstreamTls(
  input: NonNullable<GatewayDefinition['services'][string]['tls']>,
  endpoints: EndpointIR[],
  at: string,
  errors: FieldError[],
): ClusterIR['tls'] {
  const hosts = [...new Set(endpoints.map((endpoint) => endpoint.host))];
  const sni = input.sni ?? (hosts.length === 1 && !isIPv4(hosts[0] ?? '') ? hosts[0] : undefined);
  if (sni === undefined) {
    errors.push({
      path: `${at}.sni`,
      message: 'is needed when the endpoints are not one DNS name: it is the name the certificate is verified for',
    });
  }
  return {
    sni: sni ?? '',
    caFile: input.caFile,
    clientCertificate:
      input.certFile !== undefined && input.keyFile !== undefined
        ? { certFile: input.certFile, keyFile: input.keyFile }
        : undefined,
  };
}

function httpHealthCheckIR(input: z.output<typeof httpHealthCheck>): HealthCheckIR {
  const settings =
    typeof input === 'string'
      ? { path: input, interval: '5s', timeout: '1s', unhealthyThreshold: 2, healthyThreshold: 1 }
      : input;
  return {
    kind: 'http',
    path: settings.path,
    ...timing(settings),
    expectedStatuses: typeof input === 'string' ? [] : [...new Set(input.expectedStatuses ?? [])],
  };
}

function grpcHealthCheckIR(input: Exclude<z.output<typeof grpcHealthCheck>, boolean>): HealthCheckIR {
  return { kind: 'grpc', path: undefined, ...timing(input), expectedStatuses: [] };
}

function timing(input: { interval: string; timeout: string; unhealthyThreshold: number; healthyThreshold: number }) {
  return {
    intervalMs: ms(input.interval),
    timeoutMs: ms(input.timeout),
    unhealthyThreshold: input.unhealthyThreshold,
    healthyThreshold: input.healthyThreshold,
  };
}

function outlierDetectionIR(input: z.output<typeof outlierDetection>): OutlierDetectionIR {
  const entries: Array<[keyof OutlierDetectionIR, number | undefined]> = [
    ['consecutive5xx', input.consecutive5xx],
    ['consecutiveGatewayFailure', input.consecutiveGatewayFailure],
    ['consecutiveLocalOriginFailure', input.consecutiveLocalOriginFailure],
    ['intervalMs', optionalMs(input.interval)],
    ['baseEjectionTimeMs', optionalMs(input.baseEjectionTime)],
    ['maxEjectionTimeMs', optionalMs(input.maxEjectionTime)],
    ['maxEjectionPercent', input.maxEjectionPercent],
    ['successRateMinimumHosts', input.successRate?.minimumHosts],
    ['successRateRequestVolume', input.successRate?.requestVolume],
    ['successRateStdevFactor', input.successRate?.stdevFactor],
    ['failurePercentageThreshold', input.failurePercentage?.threshold],
    ['failurePercentageMinimumHosts', input.failurePercentage?.minimumHosts],
    ['failurePercentageRequestVolume', input.failurePercentage?.requestVolume],
    ['enforcingConsecutive5xx', input.enforcing?.consecutive5xx],
    // Envoy counts gateway failures but only ejects on them when enforcement is on.
    [
      'enforcingConsecutiveGatewayFailure',
      input.enforcing?.consecutiveGatewayFailure ?? (input.consecutiveGatewayFailure === undefined ? undefined : 100),
    ],
    ['enforcingConsecutiveLocalOriginFailure', input.enforcing?.consecutiveLocalOriginFailure],
    ['enforcingSuccessRate', input.enforcing?.successRate],
    ['enforcingLocalOriginSuccessRate', input.enforcing?.localOriginSuccessRate],
    // A failure-percentage threshold means nothing until it is enforced (Envoy's default is 0).
    [
      'enforcingFailurePercentage',
      input.enforcing?.failurePercentage ?? (input.failurePercentage === undefined ? undefined : 100),
    ],
    ['enforcingFailurePercentageLocalOrigin', input.enforcing?.failurePercentageLocalOrigin],
  ];
  return Object.fromEntries(entries.filter(([, value]) => value !== undefined));
}

function circuitBreakersIR(input: z.output<typeof circuitBreakers>): CircuitBreakersIR {
  const out: CircuitBreakersIR = {};
  if (input.maxConnections !== undefined) out.maxConnections = input.maxConnections;
  if (input.maxPendingRequests !== undefined) out.maxPendingRequests = input.maxPendingRequests;
  if (input.maxRequests !== undefined) out.maxRequests = input.maxRequests;
  if (input.maxRetries !== undefined) out.maxRetries = input.maxRetries;
  if (input.retryBudget !== undefined) out.retryBudget = { ...input.retryBudget };
  return out;
}

function optionalMs(text: string | undefined): number | undefined {
  return text === undefined ? undefined : ms(text);
}

/** Durations were validated by the schema. */
function ms(text: string): number {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`unvalidated duration: ${text}`);
  return value;
}
