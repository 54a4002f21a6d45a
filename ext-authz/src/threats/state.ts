// The blocks the threat detector put in force, as this replica holds them: plain data and
// pure lookups, so a Check decides from memory. Redis and pub/sub are in block-store.ts.
import { blockMember, deviceHash, type ThreatBlock } from '@sekisho/service-kit/threat-contract';

export type ThreatRefusal =
  | { code: 'IP_BLOCKED'; reason: 'ip_blocked'; block: ThreatBlock }
  | { code: 'USER_BLOCKED'; reason: 'user_blocked'; block: ThreatBlock }
  | { code: 'RATE_LIMIT_EXCEEDED'; reason: 'user_rate_limited'; block: ThreatBlock; retryAfterSeconds: number }
  | { code: 'ADDITIONAL_AUTH_REQUIRED'; reason: 'additional_auth_required'; block: ThreatBlock };

/** What a verified request shows against a geo anomaly's additional-authentication state. */
export interface AuthProof {
  /** The token's auth_time (seconds). */
  authTimeS: number;
  /** The token has firebase.sign_in_second_factor. */
  secondFactor: boolean;
  /** The request's device id header, when sent. */
  deviceId: string | undefined;
}

/** What decide() reads: memory only, never the network. */
export interface ThreatView {
  /** Checked before any token verification: a blocked address costs no signature work. */
  ipRefusal(ip: string | undefined, nowMs: number): ThreatRefusal | undefined;
  /** A verified user's block, or the aggressive limit it is under (which this call counts). */
  userRefusal(uid: string, nowMs: number): ThreatRefusal | undefined;
  /** A geo anomaly's additional-authentication state in force on the user (what the request must then prove). */
  authState(uid: string, nowMs: number): AuthState | undefined;
}

/** A geo anomaly's state on a user. */
export type AuthState = Extract<ThreatBlock, { kind: 'auth' }>;

/**
 * A second factor counts only from a sign-in at or after the far one (an older one proved
 * nothing about it); a device counts only when an operator registered it for the user (the
 * record holds its hash, so a header alone never passes).
 */
export function additionalAuthRefusal(state: AuthState, proof: AuthProof): ThreatRefusal | undefined {
  if (proof.secondFactor && proof.authTimeS >= state.authTimeS) return undefined;
  if (proof.deviceId !== undefined && proof.deviceId !== '' && state.devices.includes(deviceHash(proof.deviceId)))
    return undefined;
  return { code: 'ADDITIONAL_AUTH_REQUIRED', reason: 'additional_auth_required', block: state };
}

/**
 * Blocks by member (`ip:<addr>`, `user:<uid>`, `limit:<uid>`, `auth:<uid>`). A block past its untilMs is
 * ignored even while still held (the store drops it at the next load), so an expiry never
 * waits for anyone.
 */
export class ThreatTable implements ThreatView {
  private readonly blocks = new Map<string, ThreatBlock>();
  /** Per flagged user: the start of the current window and the requests counted in it. */
  private readonly windows = new Map<string, { startMs: number; count: number }>();

  replace(blocks: Iterable<ThreatBlock>): void {
    this.blocks.clear();
    for (const block of blocks) this.blocks.set(blockMember(block), block);
    for (const uid of this.windows.keys()) if (!this.blocks.has(`limit:${uid}`)) this.windows.delete(uid);
  }

  put(block: ThreatBlock): void {
    const member = blockMember(block);
    const current = this.blocks.get(member);
    // Equal expiry replaces too: an operator's trust-device rewrites the record, not its expiry.
    if (!current || current.untilMs <= block.untilMs) this.blocks.set(member, block);
  }

  remove(member: string): void {
    this.blocks.delete(member);
    if (member.startsWith('limit:')) this.windows.delete(member.slice('limit:'.length));
  }

  get size(): number {
    return this.blocks.size;
  }

  /** Blocks in force at nowMs, for metrics and /status. */
  active(nowMs: number): ThreatBlock[] {
    return [...this.blocks.values()].filter((block) => block.untilMs > nowMs);
  }

  ipRefusal(ip: string | undefined, nowMs: number): ThreatRefusal | undefined {
    if (ip === undefined || this.blocks.size === 0) return undefined;
    const block = this.inForce(`ip:${ip}`, nowMs);
    return block && { code: 'IP_BLOCKED', reason: 'ip_blocked', block };
  }

  userRefusal(uid: string, nowMs: number): ThreatRefusal | undefined {
    if (this.blocks.size === 0) return undefined;
    const blocked = this.inForce(`user:${uid}`, nowMs);
    if (blocked) return { code: 'USER_BLOCKED', reason: 'user_blocked', block: blocked };
    const limited = this.inForce(`limit:${uid}`, nowMs);
    if (limited?.kind !== 'limit') return undefined;
    // A fixed window per replica: enforcement needs no network call; with N replicas behind
    // Envoy's round robin a user gets at most N × limit per window.
    let window = this.windows.get(uid);
    if (!window || nowMs - window.startMs >= limited.windowMs) {
      window = { startMs: nowMs - ((nowMs - (window?.startMs ?? nowMs)) % limited.windowMs), count: 0 };
      this.windows.set(uid, window);
    }
    if (window.count < limited.limit) {
      window.count++;
      return undefined;
    }
    const retryAfterSeconds = Math.max(1, Math.ceil((window.startMs + limited.windowMs - nowMs) / 1000));
    return { code: 'RATE_LIMIT_EXCEEDED', reason: 'user_rate_limited', block: limited, retryAfterSeconds };
  }

  authState(uid: string, nowMs: number): AuthState | undefined {
    if (this.blocks.size === 0) return undefined;
    const block = this.inForce(blockMember({ kind: 'auth', subject: uid }), nowMs);
    return block?.kind === 'auth' ? block : undefined;
  }

  private inForce(member: string, nowMs: number): ThreatBlock | undefined {
    const block = this.blocks.get(member);
    return block && block.untilMs > nowMs ? block : undefined;
  }
}
