// What the control plane, the threat detector, ext-authz and the admin CLI agree on for threat
// detection: the rules the control plane hands the detector (through Envoy's gRPC access log,
// as one custom tag), and the block records the detector writes to Redis for ext-authz. One
// place, so the writer and the readers cannot drift apart.
import { createHash } from 'node:crypto';
import * as z from 'zod';

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
  /**
   * A sign-in (a token with an auth_time the detector has not seen for the user) farther than
   * `distanceKm` from every one of the user's usual locations → additional authentication for
   * `forMs`. The usual locations are the last `usualLocations` trusted sign-ins' places, kept
   * `rememberMs`. The location headers reach the log only from a trusted proxy (Envoy removes
   * a direct client's copies).
   */
  geoAnomaly: z
    .strictObject({
      distanceKm: z.number().positive(),
      forMs: positive,
      usualLocations: positive,
      rememberMs: positive,
      latitudeHeader: z.string().min(1),
      longitudeHeader: z.string().min(1),
    })
    .optional(),
});
export type ThreatRules = z.infer<typeof threatRulesSchema>;

export type ThreatRule = 'brute_force' | 'suspicious_usage' | 'data_exfiltration' | 'geo_anomaly';
export type Severity = 'low' | 'medium' | 'high' | 'critical';

/**
 * One action in force. `ip`: every request from the address is refused (IP_BLOCKED);
 * `user`: every request of the verified user is refused (USER_BLOCKED); `limit`: the user
 * gets `limit` requests per `windowMs` (RATE_LIMIT_EXCEEDED beyond); `auth`: the user's requests
 * are refused (ADDITIONAL_AUTH_REQUIRED) unless the token shows a second factor from a sign-in
 * at or after `authTimeS` (the far sign-in's auth_time, in seconds), or the request names one
 * of `devices` (SHA-256 hex of device ids an operator trusted for the user).
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
  z.strictObject({
    kind: z.literal('auth'),
    subject: z.string().min(1),
    rule: z.string(),
    severity: z.string(),
    untilMs: z.number(),
    authTimeS: z.number(),
    devices: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(100),
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
    /** Per user: the newest auth_time seen (a string key), and the usual locations (a list). */
    lastSignIn: (uid: string) => `${prefix}:signin:last:${uid}`,
    locations: (uid: string) => `${prefix}:signin:locations:${uid}`,
    /** Per user: the SHA-256 hex of each device id an operator trusted (a set). */
    devices: (uid: string) => `${prefix}:devices:${uid}`,
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

/**
 * Lifts a block and announces it (KEYS: index, records, channel; ARGV: member, the change's
 * JSON); 1 when one was in force. The admin command's unblock and the detector's lift (a
 * second-factor sign-in) run this one script, so they cannot come to differ.
 */
export const liftBlockScript = `
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then redis.call('PUBLISH', KEYS[3], ARGV[2]) end
return removed`;

// Lua: the record of an additional-authentication state (a decoded table) as JSON text with
// `devices` taken from the user's trusted set (KEY): valid hashes only, sorted, at most the 100
// the schema allows. The list is spliced in by hand because cjson writes an empty table as {}.
const recordWithTrustedDevices = `
local function withTrustedDevices(record, devicesKey)
  local hashes = {}
  for _, one in ipairs(redis.call('SMEMBERS', devicesKey)) do
    if #one == 64 and not one:find('[^0-9a-f]') then hashes[#hashes + 1] = one end
  end
  table.sort(hashes)
  while #hashes > 100 do table.remove(hashes) end
  record.devices = nil
  local body = cjson.encode(record)
  local list = #hashes == 0 and '[]' or '["' .. table.concat(hashes, '","') .. '"]'
  return string.sub(body, 1, -2) .. ',"devices":' .. list .. '}'
end`;

/**
 * Trusts (ARGV[3] '1') or stops trusting ('0') a device (ARGV[2], its hash) of a user and, when
 * the user's additional-authentication state (ARGV[1], its member) is in force — in the index
 * and in the records — rewrites its devices from the set and announces it, all in one step
 * (KEYS: index, records, channel, the user's devices set). 1 when a state was rewritten.
 * Atomic, so concurrent trust and untrust calls, a lift or the detector's put of a new state
 * cannot leave the set and the record (or the index and the record) disagreeing.
 */
export const trustDeviceScript = `${recordWithTrustedDevices}
if ARGV[3] == '1' then redis.call('SADD', KEYS[4], ARGV[2]) else redis.call('SREM', KEYS[4], ARGV[2]) end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local text = redis.call('HGET', KEYS[2], ARGV[1])
if not text then return 0 end
local ok, record = pcall(cjson.decode, text)
if not ok or type(record) ~= 'table' or record.kind ~= 'auth' then return 0 end
local updated = withTrustedDevices(record, KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], updated)
redis.call('PUBLISH', KEYS[3], '{"op":"block","block":' .. updated .. '}')
return 1`;

/**
 * Puts a block in force unless one for the same subject lasts as long, and announces it (KEYS:
 * index, records, channel, the subject's trusted devices set; ARGV: member, untilMs, the
 * record's JSON, the change's JSON); 1 when written. An additional-authentication state takes
 * its devices from the set in the same step, so a trust-device running at the same moment is
 * either in the record or finds the record and rewrites it.
 */
export const putBlockScript = `${recordWithTrustedDevices}
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
local record, change = ARGV[3], ARGV[4]
local decoded = cjson.decode(record)
if decoded.kind == 'auth' then
  record = withTrustedDevices(decoded, KEYS[4])
  change = '{"op":"block","block":' .. record .. '}'
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], record)
redis.call('PUBLISH', KEYS[3], change)
return 1`;

/** The request header naming the client's device (checked against the user's trusted set). */
export const deviceIdHeader = 'x-device-id';

/** How a device id is kept and compared: never the id itself, which works like a credential. */
export function deviceHash(deviceId: string): string {
  return createHash('sha256').update(deviceId).digest('hex');
}
