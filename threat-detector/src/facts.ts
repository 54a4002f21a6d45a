// One finished request (Envoy's gRPC access-log entry) → the facts the rules count. Pure: what
// Envoy served decides, never a guess inside ext-authz.
import type { HTTPAccessLogEntry } from '@sekisho/proto/envoy/data/accesslog/v3/accesslog';
import { authzDynamicMetadataKeys, authzDynamicMetadataNamespace } from '@sekisho/service-kit/contract';
import type { ThreatRules } from '@sekisho/service-kit/threat-contract';
import { type Place, placeFromHeaders } from './geo';

/** What a rule counts, per subject (a client IP or a verified user id). */
export type Counter = 'failed_auth' | 'calls' | 'bytes';

export interface Fact {
  counter: Counter;
  subject: string;
  amount: number;
}

/** Which of the two ways a request counted as a failed authentication. */
export type FailureKind = 'token' | 'login';

/**
 * A request of a verified user with the token's auth_time: the detector calls it a sign-in when
 * that auth_time is newer than any it saw for the user (a refreshed token keeps its auth_time).
 */
export interface SignInFact {
  user: string;
  authTimeS: number;
  secondFactor: boolean;
  /** The client address Envoy derived (for the GeoIP lookup). */
  ip: string;
  /** From the CDN's headers, which reach the log only from a trusted proxy. */
  place: Place | undefined;
}

export interface ExtractedFacts {
  facts: Fact[];
  failure: FailureKind | undefined;
  signIn?: SignInFact;
}

/**
 * A token that failed verification (ext-authz's denial, Envoy's UAEX flag, with the
 * authentication_failed metadata ext-authz sets; a request without any token is not a failed
 * login), and on a login route the upstream's own 401 or 403. The verified user id is the
 * dynamic metadata ext-authz sets on an allowed request: a client can send any header (and a
 * request Envoy refuses before its filters run still carries it), never dynamic metadata.
 */
export function factsOf(entry: HTTPAccessLogEntry, rules: ThreatRules): ExtractedFacts {
  const facts: Fact[] = [];
  const common = entry.commonProperties;
  const ip = common?.downstreamRemoteAddress?.socketAddress?.address ?? '';
  const status = entry.response?.responseCode ?? 0;
  const byExtAuthz = common?.responseFlags?.unauthorizedDetails !== undefined;
  let failure: FailureKind | undefined;
  const authz = common?.metadata?.filterMetadata[authzDynamicMetadataNamespace];
  const tokenFailed = authz?.[authzDynamicMetadataKeys.authenticationFailed] === 'true';
  if (byExtAuthz && status === 401 && tokenFailed) failure = 'token';
  else if (!byExtAuthz && (status === 401 || status === 403) && rules.loginRoutes.includes(common?.routeName ?? ''))
    failure = 'login';
  if (rules.bruteForce && ip !== '' && failure !== undefined) {
    if (failure === 'login' || rules.bruteForce.countTokenFailures)
      facts.push({ counter: 'failed_auth', subject: ip, amount: 1 });
  }
  const verified = authz?.[authzDynamicMetadataKeys.userId];
  const user = typeof verified === 'string' ? verified : '';
  if (user !== '') {
    if (rules.suspiciousUsage) facts.push({ counter: 'calls', subject: user, amount: 1 });
    const bytes = entry.response?.responseBodyBytes ?? 0;
    if (rules.dataExfiltration && bytes > 0) facts.push({ counter: 'bytes', subject: user, amount: bytes });
    const authTime = authz?.[authzDynamicMetadataKeys.authTime];
    const geo = rules.geoAnomaly;
    if (geo && typeof authTime === 'string' && /^\d{1,12}$/.test(authTime)) {
      const headers = entry.request?.requestHeaders ?? {};
      const signIn: SignInFact = {
        user,
        authTimeS: Number(authTime),
        secondFactor: typeof authz?.[authzDynamicMetadataKeys.secondFactor] === 'string',
        ip,
        place: placeFromHeaders(headers[geo.latitudeHeader], headers[geo.longitudeHeader]),
      };
      return { facts, failure, signIn };
    }
  }
  return { facts, failure };
}
