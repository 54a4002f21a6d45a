import { describe, expect, it } from 'vitest';
import { type AccountEntry, accountRefusal, applyChange, isValidUid, parseFieldValue } from './state';

// Firebase's tokensValidAfterTime rule at its boundaries, in whole seconds.
const revokedAt = 1_800_000_000;

describe('accountRefusal', () => {
  it.each<{ name: string; entry: AccountEntry | undefined; payload: Record<string, unknown>; expected: string }>([
    { name: 'no state for the uid', entry: undefined, payload: { auth_time: 1, iat: 1 }, expected: 'allowed' },
    { name: 'an empty entry', entry: {}, payload: { auth_time: 1, iat: 1 }, expected: 'allowed' },
    {
      name: 'signed in a second before the revocation',
      entry: { validAfter: revokedAt },
      payload: { auth_time: revokedAt - 1, iat: revokedAt - 1 },
      expected: 'TOKEN_REVOKED',
    },
    {
      name: 'signed in in the very second of the revocation (Firebase counts it as after)',
      entry: { validAfter: revokedAt },
      payload: { auth_time: revokedAt, iat: revokedAt },
      expected: 'allowed',
    },
    {
      name: 'signed in after the revocation',
      entry: { validAfter: revokedAt },
      payload: { auth_time: revokedAt + 1, iat: revokedAt + 1 },
      expected: 'allowed',
    },
    {
      name: 'refreshed after the revocation from a sign-in before it (auth_time decides)',
      entry: { validAfter: revokedAt },
      payload: { auth_time: revokedAt - 600, iat: revokedAt + 10 },
      expected: 'TOKEN_REVOKED',
    },
    {
      name: 'a fractional auth_time just under the second',
      entry: { validAfter: revokedAt },
      payload: { auth_time: revokedAt - 0.001, iat: revokedAt },
      expected: 'TOKEN_REVOKED',
    },
    {
      name: 'no auth_time: iat before the revocation',
      entry: { validAfter: revokedAt },
      payload: { iat: revokedAt - 1 },
      expected: 'TOKEN_REVOKED',
    },
    {
      name: 'no auth_time: iat at the revocation',
      entry: { validAfter: revokedAt },
      payload: { iat: revokedAt },
      expected: 'allowed',
    },
    { name: 'revoked, and no time at all', entry: { validAfter: revokedAt }, payload: {}, expected: 'TOKEN_REVOKED' },
    {
      name: 'revoked, auth_time a string',
      entry: { validAfter: revokedAt },
      payload: { auth_time: String(revokedAt + 5) },
      expected: 'TOKEN_REVOKED',
    },
    {
      name: 'disabled',
      entry: { disabled: true },
      payload: { auth_time: revokedAt, iat: revokedAt },
      expected: 'USER_INACTIVE',
    },
    {
      name: 'disabled wins over a sign-in after the revocation',
      entry: { disabled: true, validAfter: revokedAt },
      payload: { auth_time: revokedAt + 100, iat: revokedAt + 100 },
      expected: 'USER_INACTIVE',
    },
    {
      name: 'only overrides',
      entry: { group: 'vip', customerId: 'c-1' },
      payload: { auth_time: 1, iat: 1 },
      expected: 'allowed',
    },
  ])('$name → $expected', ({ entry, payload, expected }) => {
    expect(accountRefusal(entry, payload)?.code ?? 'allowed').toBe(expected);
  });
});

describe('applyChange', () => {
  it('sets and removes fields, dropping an entry left empty', () => {
    const table = new Map<string, AccountEntry>();
    expect(applyChange(table, { uid: 'u', field: 'disabled', value: true })).toBe(true);
    expect(applyChange(table, { uid: 'u', field: 'validAfter', value: '1700000000' })).toBe(true);
    expect(table.get('u')).toEqual({ disabled: true, validAfter: 1_700_000_000 });
    applyChange(table, { uid: 'u', field: 'disabled', value: null });
    expect(table.get('u')).toEqual({ validAfter: 1_700_000_000 });
    applyChange(table, { uid: 'u', field: 'validAfter', value: null });
    expect(table.has('u')).toBe(false);
  });

  it('never mutates an entry another reader holds', () => {
    const table = new Map<string, AccountEntry>([['u', { disabled: true }]]);
    const before = table.get('u');
    applyChange(table, { uid: 'u', field: 'group', value: 'vip' });
    expect(before).toEqual({ disabled: true });
  });

  it.each([
    ['disabled', '0'],
    ['disabled', 'yes'],
    ['validAfter', '-1'],
    ['validAfter', '1.5'],
    ['validAfter', 'soon'],
    ['group', ''],
    ['customerId', 7],
    ['customerId', 'x'.repeat(257)],
  ] as const)('refuses %s = %j', (field, value) => {
    const table = new Map<string, AccountEntry>();
    expect(applyChange(table, { uid: 'u', field, value: value as never })).toBe(false);
    expect(typeof parseFieldValue(field, value)).toBe('symbol');
    expect(table.size).toBe(0);
  });
});

describe('isValidUid', () => {
  it.each([
    ['alice', true],
    ['x'.repeat(128), true],
    ['', false],
    ['x'.repeat(129), false],
    ['a\nb', false],
    ['a\u007fb', false],
  ])('%j → %s', (uid, valid) => {
    expect(isValidUid(uid)).toBe(valid);
  });
});
