// What the control plane, the threat detector, ext-authz and the admin CLI agree on for threat
// detection: the rules the control plane hands the detector (through Envoy's gRPC access log,
// as one custom tag), and the block records the detector writes to Redis for ext-authz. One
// place, so the writer and the readers cannot drift apart.
import { z } from 'zod';

/** The custom tag of every gRPC access-log entry that carries the rules (compact JSON). */
export const threatRulesTag = 'sekisho.threat_rules';
/** The log_name of the gRPC access logger, so the detector can tell Sekisho's ingress logs. */
export const threatAccessLogName = 'sekisho_threat';

const positive = z.int().min(1);

/** The rules in machine units (ms, bytes); each rule absent = off. */
export const threatRulesSchema = z.strictObject({
  /** Route ids whose upstream answer decides whether a sign-in failed (401 or 403). */
  loginRoutes: z.array(z.string().min(1)),
  bruteForce: z
    .strictObject({
      failures: positive,
      withinMs: positive,
      blockMs: positive,
      /** Also count ext-authz's 401s (a bad or expired token) as failed authentications. */
      countTokenFailures: z.boolean(),
    })
    .optional(),
  suspiciousUsage: z
    .strictObject({ calls: positive, withinMs: positive, limit: positive, limitWindowMs: positive, forMs: positive })
    .optional(),
  dataExfiltration: z.strictObject({ bytes: positive, withinMs: positive, blockMs: positive }).optional(),
});
export type ThreatRules = z.infer<typeof threatRulesSchema>;

export type ThreatRule = 'brute_force' | 'suspicious_usage' | 'data_exfiltration';
export type Severity = 'low' | 'medium' | 'high' | 'critical';

/**
 * One action in force. `ip`: every request from the address is refused (IP_BLOCKED);
 * `user`: every request of the verified user is refused (USER_BLOCKED); `limit`: the user
 * gets `limit` requests per `windowMs` (RATE_LIMIT_EXCEEDED beyond).
 */
export const threatBlockSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('ip'),
    subject: z.string().min(1),
    rule: z.string(),
    severity: z.string(),
    untilMs: z.number(),
  }),
  z.strictObject({
    kind: z.literal('user'),
    subject: z.string().min(1),
    rule: z.string(),
    severity: z.string(),
    untilMs: z.number(),
  }),
  z.strictObject({
    kind: z.literal('limit'),
    subject: z.string().min(1),
    rule: z.string(),
    severity: z.string(),
    untilMs: z.number(),
    limit: positive,
    windowMs: positive,
  }),
]);
export type ThreatBlock = z.infer<typeof threatBlockSchema>;

/**
 * Redis layout under a prefix: a sorted set of every block (member `<kind>:<subject>`, score
 * its expiry in ms) with a hash of the records, and a channel announcing each change. The
 * sorted set lets a reader drop expired entries with one command; nothing is trusted past
 * its `untilMs` even if nobody removed it.
 */
export function threatKeys(prefix: string) {
  return {
    index: `${prefix}:blocks:index`,
    records: `${prefix}:blocks:records`,
    channel: `${prefix}:blocks:changes`,
    counter: (name: string, subject: string) => `${prefix}:count:${name}:${subject}`,
  };
}
export const defaultThreatKeyPrefix = 'sekisho:threats';

export function blockMember(block: Pick<ThreatBlock, 'kind' | 'subject'>): string {
  return `${block.kind}:${block.subject}`;
}

/** A change on the channel: a block put in force, or lifted (by its member). */
export const threatChangeSchema = z.union([
  z.strictObject({ op: z.literal('block'), block: threatBlockSchema }),
  z.strictObject({ op: z.literal('unblock'), member: z.string().min(1) }),
]);
export type ThreatChange = z.infer<typeof threatChangeSchema>;
