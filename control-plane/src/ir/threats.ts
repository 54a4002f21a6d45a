// Definition `threats` → ThreatsIR: the rules in ms and bytes (the wire form the detector
// reads, service-kit/src/threat-contract.ts), with their cross-references checked.
import type { ThreatRules } from '@sekisho/service-kit/threat-contract';
import { parseDuration } from '../definition/duration';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import { threatDetectorClusterName } from './names';
import type { ThreatsIR } from './types';

const MiB = 1024 * 1024;

export function buildThreatsIR(
  definition: GatewayDefinition,
  routeIds: ReadonlySet<string>,
  errors: FieldError[],
): ThreatsIR | undefined {
  const { threats } = definition;
  const detector = definition.policyServices.threatDetector;
  if (threats === undefined) {
    if (detector !== undefined)
      errors.push({
        path: 'policyServices.threatDetector',
        message: 'is set, but there is no threats section to send it logs for',
      });
    return undefined;
  }
  if (detector === undefined) {
    errors.push({
      path: 'threats',
      message: 'needs policyServices.threatDetector, the service that receives the access log',
    });
    return undefined;
  }
  for (const [index, id] of threats.loginRoutes.entries())
    if (!routeIds.has(id))
      errors.push({ path: `threats.loginRoutes[${index}]`, message: `names no route id: "${id}"` });

  const { bruteForce, suspiciousUsage, dataExfiltration, geoAnomaly } = threats;
  const rules: ThreatRules = {
    loginRoutes: threats.loginRoutes,
    ...(bruteForce && {
      bruteForce: {
        failures: bruteForce.failures,
        withinMs: ms(bruteForce.within),
        blockMs: ms(bruteForce.blockIpFor),
        countTokenFailures: bruteForce.countTokenFailures,
      },
    }),
    ...(suspiciousUsage && {
      suspiciousUsage: {
        calls: suspiciousUsage.calls,
        withinMs: ms(suspiciousUsage.within),
        limit: suspiciousUsage.limit,
        limitWindowMs: ms(suspiciousUsage.per),
        forMs: ms(suspiciousUsage.for),
      },
    }),
    ...(dataExfiltration && {
      dataExfiltration: {
        bytes: Math.round(dataExfiltration.megabytes * MiB),
        withinMs: ms(dataExfiltration.within),
        blockMs: ms(dataExfiltration.blockUserFor),
      },
    }),
    ...(geoAnomaly && {
      geoAnomaly: {
        distanceKm: geoAnomaly.distanceKm,
        forMs: ms(geoAnomaly.for),
        usualLocations: geoAnomaly.usualLocations,
        rememberMs: ms(geoAnomaly.rememberFor),
        latitudeHeader: geoAnomaly.latitudeHeader,
        longitudeHeader: geoAnomaly.longitudeHeader,
      },
    }),
  };
  return { clusterName: threatDetectorClusterName, flushIntervalMs: ms(threats.flushInterval), rules };
}

function ms(text: string): number {
  const value = parseDuration(text);
  if (value === undefined) throw new Error(`unvalidated duration: ${text}`);
  return value;
}
