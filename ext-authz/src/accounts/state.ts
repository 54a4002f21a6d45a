// Sekisho's own view of accounts, kept so that a request is decided without asking anyone:
// which uids are disabled, since when each uid's earlier tokens are revoked (Firebase's
// tokensValidAfterTime, in whole seconds), and the group and customer id an operator set
// for a uid (which take effect before the user's next token carries the new claims).
// Plain data and pure functions; Redis and pub/sub are in redis-store.ts.

export const accountFields = ['disabled', 'validAfter', 'group', 'customerId'] as const;
export type AccountField = (typeof accountFields)[number];

export interface AccountEntry {
  disabled?: true;
  /** Unix seconds: a token whose auth_time is earlier was revoked. */
  validAfter?: number;
  /** Replaces the token's group claim (a name the policy does not define means no group). */
  group?: string;
  /** Replaces the token's customer id claim for ownership checks. */
  customerId?: string;
}

/** One change as the admin command writes it and the pub/sub channel carries it. */
export interface AccountChange {
  /** The state's version after this change (Redis INCR), so a replica sees a gap. */
  version: number;
  uid: string;
  field: AccountField;
  /** null removes the field (enable; a cleared override). */
  value: string | number | true | null;
}

/** What decide() reads: memory only, never the network. */
export interface AccountView {
  /** false until the first full load from Redis: deciding without it could let a disabled user in. */
  readonly loaded: boolean;
  get(uid: string): AccountEntry | undefined;
}

export type AccountRefusal =
  | { code: 'USER_INACTIVE'; reason: 'account_disabled' }
  | { code: 'TOKEN_REVOKED'; reason: 'token_revoked' };

/**
 * Firebase's rule for revoked sessions (firebase-admin's checkRevoked): a token is revoked
 * when its auth_time is before the user's tokensValidAfterTime, both in whole seconds, so a
 * sign-in in the very second of the revocation counts as after it. Every token issued before
 * the revocation has auth_time ≤ iat < validAfter; without auth_time (verify.ts requires it)
 * iat is compared. A disabled account is refused whatever its tokens.
 */
export function accountRefusal(
  entry: AccountEntry | undefined,
  payload: Readonly<Record<string, unknown>>,
): AccountRefusal | undefined {
  if (entry === undefined) return undefined;
  if (entry.disabled) return { code: 'USER_INACTIVE', reason: 'account_disabled' };
  if (entry.validAfter !== undefined) {
    const authTime = typeof payload.auth_time === 'number' ? payload.auth_time : payload.iat;
    if (typeof authTime !== 'number' || Math.floor(authTime) < entry.validAfter) {
      return { code: 'TOKEN_REVOKED', reason: 'token_revoked' };
    }
  }
  return undefined;
}

/** Applies one change to the table; returns false when the value is not one the field takes. */
export function applyChange(table: Map<string, AccountEntry>, change: Omit<AccountChange, 'version'>): boolean {
  const parsed = parseFieldValue(change.field, change.value);
  if (parsed === invalid) return false;
  const entry: AccountEntry = { ...table.get(change.uid) };
  if (parsed === undefined) delete entry[change.field];
  else Object.assign(entry, { [change.field]: parsed });
  if (Object.keys(entry).length === 0) table.delete(change.uid);
  else table.set(change.uid, entry);
  return true;
}

const invalid = Symbol('invalid');

/** The stored text (or a published value) of a field, read strictly: anything odd is refused. */
export function parseFieldValue(
  field: AccountField,
  value: unknown,
): AccountEntry[AccountField] | undefined | typeof invalid {
  if (value === null) return undefined;
  switch (field) {
    case 'disabled':
      return value === true || value === '1' ? true : invalid;
    case 'validAfter': {
      const seconds = typeof value === 'string' && /^\d{1,12}$/.test(value) ? Number(value) : value;
      return typeof seconds === 'number' && Number.isSafeInteger(seconds) && seconds >= 0 ? seconds : invalid;
    }
    case 'group':
    case 'customerId':
      return typeof value === 'string' && value !== '' && value.length <= 256 ? value : invalid;
  }
}

/** A uid as Firebase allows it: 1–128 characters, no control characters. */
export function isValidUid(uid: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  return uid.length >= 1 && uid.length <= 128 && !/[\u0000-\u001f\u007f]/.test(uid);
}
