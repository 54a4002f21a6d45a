import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { allIdentityHeaders, authzContextKeys, identityHeaders } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import type { AccountEntry, AccountView } from './accounts/state';
import {
  bearerToken,
  type CheckInput,
  type Decision,
  type Denial,
  decide,
  routeRequirements,
  type VerifyToken,
} from './decision';
import type { FirebaseClaims, VerifyResult } from './firebase/verify';
import { type CompiledPolicy, compileAuthzPolicy } from './policy';
import { ThreatTable } from './threats/state';

// decide() is pure given its verifier; the verifier here is a table of tokens to results,
// so each case states exactly what the token "was". firebase/verify.test.ts covers how
// real tokens get those results.

const source = AuthzPolicy.fromPartial({
  firebase: { projectId: 'salon-test' },
  groupClaim: 'tier',
  defaultGroup: 'basic_customer',
  groups: {
    basic_customer: { permissions: ['read:own_profile', 'read:own_appointments'] },
    verified_customer: { permissions: ['read:own_profile', 'read:own_appointments', 'create:appointments'] },
    empty_group: { permissions: [] },
  },
});
const policy = compileAuthzPolicy(source);
const variant = (patch: Partial<AuthzPolicy>) => compileAuthzPolicy(AuthzPolicy.fromPartial({ ...source, ...patch }));

function claims(uid: string, payload: Record<string, unknown> = {}, extra: Partial<FirebaseClaims> = {}): VerifyResult {
  const firebase = { sign_in_provider: 'password', identities: {} };
  return { ok: true, claims: { uid, payload: { sub: uid, firebase, ...payload }, ...extra } };
}
const signedIn = (uid: string, firebase: unknown) => claims(uid, { firebase });

const tokens: Record<string, VerifyResult> = {
  basic: claims('user-basic'),
  verified: claims(
    'user-verified',
    { tier: 'verified_customer' },
    { email: 'taro@example.com', emailVerified: true, phoneNumber: '+819012345678' },
  ),
  unknownGroup: claims('user-x', { tier: 'platinum' }),
  numericGroup: claims('user-n', { tier: 3 }),
  arrayGroup: claims('user-a', { tier: ['verified_customer'] }),
  objectGroup: claims('user-o', { tier: { name: 'verified_customer' } }),
  emptyStringGroup: claims('user-s', { tier: '' }),
  nullGroup: claims('user-z', { tier: null }),
  booleanGroup: claims('user-b', { tier: true }),
  constructorGroup: claims('user-c', { tier: 'constructor' }),
  protoGroup: claims('user-p', { tier: '__proto__' }),
  emptyGroup: claims('user-e', { tier: 'empty_group' }),
  newlineUid: claims('user\nx-admin: 1'),
  badEmail: claims('user-m', {}, { email: 'a@b.example\r\nx: y', emailVerified: false }),
  anonymous: signedIn('user-anon', { sign_in_provider: 'anonymous', identities: {} }),
  google: signedIn('user-g', { sign_in_provider: 'google.com', identities: {} }),
  noProvider: signedIn('user-np', { identities: {} }),
  noFirebase: signedIn('user-nf', undefined),
  arrayFirebase: signedIn('user-af', ['password']),
  numericProvider: signedIn('user-nump', { sign_in_provider: 1 }),
  tenantA: signedIn('user-ta', { sign_in_provider: 'password', tenant: 'salon-a' }),
  tenantB: signedIn('user-tb', { sign_in_provider: 'password', tenant: 'salon-b' }),
  tenantNumber: signedIn('user-tn', { sign_in_provider: 'password', tenant: 7 }),
  expired: { ok: false, code: 'TOKEN_EXPIRED', reason: 'expired' },
  forged: { ok: false, code: 'INVALID_TOKEN', reason: 'signature_invalid' },
  noKeys: { ok: false, code: 'SERVICE_UNAVAILABLE', reason: 'keys_unavailable' },
};

const verifyCalls: Array<[string, string]> = [];
const verify: VerifyToken = async (token, projectId) => {
  verifyCalls.push([token, projectId]);
  return tokens[token] ?? { ok: false, code: 'INVALID_TOKEN', reason: 'malformed' };
};

function input(
  opts: { authorization?: string; auth?: string; permissions?: string; headers?: Record<string, string> } = {},
): CheckInput {
  return {
    headers: {
      ':path': '/api/v1/customer/profile',
      ...(opts.authorization !== undefined ? { authorization: opts.authorization } : {}),
      ...opts.headers,
    },
    route: routeRequirements({
      [authzContextKeys.routeId]: 'customer-profile',
      ...(opts.auth !== undefined ? { [authzContextKeys.auth]: opts.auth } : {}),
      ...(opts.permissions !== undefined ? { [authzContextKeys.permissions]: opts.permissions } : {}),
    }),
  };
}

function headersOf(decision: Decision): Record<string, string> {
  return decision.allow ? Object.fromEntries(decision.headersToSet) : {};
}

describe('decide', () => {
  describe('denials', () => {
    const cases: Array<{ name: string; input: CheckInput; policy?: CompiledPolicy; expected: Partial<Decision> }> = [
      {
        name: 'no policy received yet',
        input: input({ authorization: 'Bearer basic' }),
        policy: undefined,
        expected: { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'no_policy' },
      },
      {
        name: 'no policy, even on an auth: none route',
        input: input({ auth: 'none' }),
        policy: undefined,
        expected: { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'no_policy' },
      },
      { name: 'no authorization header', input: input(), expected: { allow: false, code: 'MISSING_TOKEN' } },
      {
        name: 'a Basic authorization header',
        input: input({ authorization: 'Basic dXNlcjpwYXNz' }),
        expected: { allow: false, code: 'MISSING_TOKEN', reason: 'no_bearer_token' },
      },
      {
        name: 'a Bearer scheme without token',
        input: input({ authorization: 'Bearer ' }),
        expected: { allow: false, code: 'MISSING_TOKEN' },
      },
      {
        name: 'a bare token without scheme',
        input: input({ authorization: 'basic' }),
        expected: { allow: false, code: 'MISSING_TOKEN' },
      },
      {
        name: 'an auth value other than none or optional (fails closed to required)',
        input: input({ auth: 'maybe' }),
        expected: { allow: false, code: 'MISSING_TOKEN' },
      },
      {
        name: 'auth NONE in capitals (only "none" opts out)',
        input: input({ auth: 'NONE' }),
        expected: { allow: false, code: 'MISSING_TOKEN' },
      },
      {
        name: 'an expired token',
        input: input({ authorization: 'Bearer expired' }),
        expected: { allow: false, code: 'TOKEN_EXPIRED', reason: 'expired' },
      },
      {
        name: 'a forged token',
        input: input({ authorization: 'Bearer forged' }),
        expected: { allow: false, code: 'INVALID_TOKEN', reason: 'signature_invalid' },
      },
      {
        name: 'a token when no keys are loaded',
        input: input({ authorization: 'Bearer noKeys' }),
        expected: { allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'keys_unavailable' },
      },
      {
        name: 'a uid that would inject a header',
        input: input({ authorization: 'Bearer newlineUid' }),
        expected: { allow: false, code: 'INVALID_TOKEN', reason: 'uid_not_header_safe' },
      },
      {
        name: 'a permission the default group lacks',
        input: input({ authorization: 'Bearer basic', permissions: 'read:own_profile,create:appointments' }),
        expected: {
          allow: false,
          code: 'INSUFFICIENT_PERMISSIONS',
          userId: 'user-basic',
          group: 'basic_customer',
          requiredPermissions: ['read:own_profile', 'create:appointments'],
          missingPermissions: ['create:appointments'],
        },
      },
      {
        name: 'any permission for a group the policy does not know',
        input: input({ authorization: 'Bearer unknownGroup', permissions: 'read:own_profile' }),
        expected: {
          allow: false,
          code: 'INSUFFICIENT_PERMISSIONS',
          userId: 'user-x',
          missingPermissions: ['read:own_profile'],
        },
      },
      {
        name: 'any permission for a group named constructor',
        input: input({ authorization: 'Bearer constructorGroup', permissions: 'read:own_profile' }),
        expected: { allow: false, code: 'INSUFFICIENT_PERMISSIONS' },
      },
      {
        name: 'any permission for a group named __proto__',
        input: input({ authorization: 'Bearer protoGroup', permissions: 'read:own_profile' }),
        expected: { allow: false, code: 'INSUFFICIENT_PERMISSIONS' },
      },
      ...(['numericGroup', 'arrayGroup', 'objectGroup', 'emptyStringGroup', 'nullGroup', 'booleanGroup'] as const).map(
        (token) => ({
          // A present claim that names no group never falls back to the default group.
          name: `a permission the default group has, for a group claim that names no group (${token})`,
          input: input({ authorization: `Bearer ${token}`, permissions: 'read:own_profile' }),
          expected: {
            allow: false as const,
            code: 'INSUFFICIENT_PERMISSIONS' as const,
            missingPermissions: ['read:own_profile'],
          },
        }),
      ),
      {
        name: 'a permission for a group with none',
        input: input({ authorization: 'Bearer emptyGroup', permissions: 'read:own_profile' }),
        expected: { allow: false, code: 'INSUFFICIENT_PERMISSIONS', group: 'empty_group' },
      },
      {
        name: 'any permission without a group claim when there is no default group',
        input: input({ authorization: 'Bearer basic', permissions: 'read:own_profile' }),
        policy: variant({ defaultGroup: '' }),
        expected: { allow: false, code: 'INSUFFICIENT_PERMISSIONS', missingPermissions: ['read:own_profile'] },
      },
    ];

    it.each(cases)('denies $name', async ({ input: request, expected, ...rest }) => {
      const decision = await decide(request, 'policy' in rest ? rest.policy : policy, verify);
      expect(decision).toMatchObject(expected);
    });
  });

  describe('allows', () => {
    it('lets an auth: none route through without identity, removing every identity header', async () => {
      const decision = await decide(input({ auth: 'none', authorization: 'Bearer forged' }), policy, verify);
      expect(decision).toEqual({
        allow: true,
        identity: undefined,
        headersToSet: [],
        headersToRemove: [...allIdentityHeaders],
      });
    });

    it('removes every other x-sekisho- header a client sent, on either kind of route', async () => {
      const spoofed = { 'x-sekisho-tenant': 'other-salon', 'x-sekisho-user-id': 'admin', 'x-other': 'kept' };
      const open = await decide(input({ auth: 'none', headers: spoofed }), policy, verify);
      expect(open.allow && open.headersToRemove).toEqual([...allIdentityHeaders, 'x-sekisho-tenant']);
      const closed = await decide(input({ authorization: 'Bearer verified', headers: spoofed }), policy, verify);
      expect(closed.allow && closed.headersToRemove).toEqual(['x-sekisho-tenant']);
      expect(headersOf(closed)[identityHeaders.userId]).toBe('user-verified');
    });

    it('verifies against the policy project and sets the identity headers of the caller', async () => {
      verifyCalls.length = 0;
      const decision = await decide(
        input({ authorization: 'Bearer verified', permissions: 'create:appointments' }),
        policy,
        verify,
      );
      expect(verifyCalls).toEqual([['verified', 'salon-test']]);
      expect(decision.allow).toBe(true);
      expect(headersOf(decision)).toEqual({
        [identityHeaders.userId]: 'user-verified',
        [identityHeaders.email]: 'taro@example.com',
        [identityHeaders.emailVerified]: 'true',
        [identityHeaders.phone]: '+819012345678',
        [identityHeaders.group]: 'verified_customer',
        [identityHeaders.permissions]: 'read:own_profile,read:own_appointments,create:appointments',
      });
      expect(decision.allow && decision.headersToRemove).toEqual([]);
    });

    it('removes the identity headers it does not set, so client copies cannot pass', async () => {
      const decision = await decide(input({ authorization: 'Bearer basic' }), policy, verify);
      expect(headersOf(decision)).toEqual({
        [identityHeaders.userId]: 'user-basic',
        [identityHeaders.group]: 'basic_customer',
        [identityHeaders.permissions]: 'read:own_profile,read:own_appointments',
      });
      expect(decision.allow && decision.headersToRemove).toEqual([
        identityHeaders.email,
        identityHeaders.emailVerified,
        identityHeaders.phone,
      ]);
    });

    it('leaves out a claim that cannot be a header value', async () => {
      const decision = await decide(input({ authorization: 'Bearer badEmail' }), policy, verify);
      expect(headersOf(decision)[identityHeaders.email]).toBeUndefined();
      expect(decision.allow && decision.headersToRemove).toContain(identityHeaders.email);
      expect(headersOf(decision)[identityHeaders.emailVerified]).toBe('false');
    });

    it.each([
      ['unknownGroup', 'user-x'],
      ['constructorGroup', 'user-c'],
      ['protoGroup', 'user-p'],
      ['numericGroup', 'user-n'],
      ['arrayGroup', 'user-a'],
      ['objectGroup', 'user-o'],
      ['emptyStringGroup', 'user-s'],
      ['nullGroup', 'user-z'],
      ['booleanGroup', 'user-b'],
    ])('gives %s no group and no permissions, but lets it reach routes that need none', async (token, userId) => {
      const decision = await decide(input({ authorization: `Bearer ${token}` }), policy, verify);
      expect(decision).toMatchObject({ allow: true, identity: { userId } });
      expect(decision.allow && decision.identity?.group).toBeUndefined();
      expect(decision.allow && decision.headersToRemove).toEqual(
        expect.arrayContaining([identityHeaders.group, identityHeaders.permissions]),
      );
    });

    it.each([
      { name: 'no group claim', token: 'basic', policy, group: 'basic_customer' },
      {
        name: 'no group claim configured',
        token: 'verified',
        policy: variant({ groupClaim: '' }),
        group: 'basic_customer',
      },
    ])('uses the default group for $name', async ({ token, policy: p, group }) => {
      const decision = await decide(input({ authorization: `Bearer ${token}` }), p, verify);
      expect(decision.allow && decision.identity?.group?.name).toBe(group);
    });

    it.each(['Bearer basic', 'bearer basic', 'BEARER basic', 'Bearer   basic', 'Bearer basic  '])(
      'accepts the authorization header %j',
      async (authorization) => {
        expect((await decide(input({ authorization }), policy, verify)).allow).toBe(true);
      },
    );
  });
});

describe('decide: auth optional', () => {
  it('lets a caller without an Authorization header through anonymously, removing every identity header', async () => {
    const decision = await decide(
      input({ auth: 'optional', headers: { 'x-sekisho-user-id': 'admin' } }),
      policy,
      verify,
    );
    expect(decision).toEqual({
      allow: true,
      identity: undefined,
      headersToSet: [],
      headersToRemove: [...allIdentityHeaders],
    });
  });

  it('sets the identity headers for a valid token', async () => {
    const decision = await decide(input({ auth: 'optional', authorization: 'Bearer verified' }), policy, verify);
    expect(decision).toMatchObject({ allow: true, identity: { userId: 'user-verified' } });
    expect(headersOf(decision)[identityHeaders.group]).toBe('verified_customer');
  });

  it.each([
    { authorization: 'Bearer forged', code: 'INVALID_TOKEN' },
    { authorization: 'Bearer expired', code: 'TOKEN_EXPIRED' },
    { authorization: 'Bearer anonymous', code: 'INVALID_TOKEN' },
    { authorization: 'Basic dXNlcjpwYXNz', code: 'MISSING_TOKEN' },
    { authorization: '', code: 'MISSING_TOKEN' },
  ])('refuses $authorization instead of ignoring it ($code)', async ({ authorization, code }) => {
    const decision = await decide(input({ auth: 'optional', authorization }), policy, verify);
    expect(decision).toMatchObject({ allow: false, code });
  });

  it('still needs a policy', async () => {
    expect(await decide(input({ auth: 'optional' }), undefined, verify)).toMatchObject({
      allow: false,
      code: 'SERVICE_UNAVAILABLE',
    });
  });
});

describe('decide: ownership', () => {
  const owned = variant({ customerIdClaim: 'customer_id' });
  const byUid = variant({ customerIdClaim: 'sub' });
  tokens.customerC42 = claims('user-c42', { customer_id: 'c-42' });
  tokens.customerNumeric = claims('user-cn', { customer_id: 42 });
  tokens.customerEmpty = claims('user-ce', { customer_id: '' });
  const at = (path: string, owner: Record<string, string>, authorization = 'Bearer customerC42'): CheckInput => ({
    ...input({ authorization }),
    path,
    route: routeRequirements({ [authzContextKeys.routeId]: 'customer', ...owner }),
  });
  const segment = { [authzContextKeys.ownerPathSegment]: '4' };
  const query = { [authzContextKeys.ownerQuery]: 'customer_id' };

  const cases: Array<{ name: string; input: CheckInput; policy?: CompiledPolicy; reason?: string }> = [
    { name: 'its own id in the path', input: at('/api/v1/customers/c-42', segment) },
    { name: 'its own id in the path, with a query', input: at('/api/v1/customers/c-42?x=1', segment) },
    { name: 'its own id percent-encoded', input: at('/api/v1/customers/c%2D42', segment) },
    { name: 'its own id in the path, more after it', input: at('/api/v1/customers/c-42/appointments', segment) },
    { name: 'another id in the path', input: at('/api/v1/customers/c-43', segment), reason: 'not_owner' },
    { name: 'an id that only starts with its own', input: at('/api/v1/customers/c-421', segment), reason: 'not_owner' },
    { name: 'a different case', input: at('/api/v1/customers/C-42', segment), reason: 'not_owner' },
    { name: 'a path too short', input: at('/api/v1/customers', segment), reason: 'owner_value_missing' },
    { name: 'an empty segment', input: at('/api/v1/customers/', segment), reason: 'owner_value_missing' },
    {
      name: 'broken percent-encoding',
      input: at('/api/v1/customers/%E0%A4%A', segment),
      reason: 'owner_value_missing',
    },
    { name: 'its own id in the query', input: at('/api/v1/points?customer_id=c-42', query) },
    { name: 'another id in the query', input: at('/api/v1/points?customer_id=c-43', query), reason: 'not_owner' },
    { name: 'no query', input: at('/api/v1/points', query), reason: 'owner_value_missing' },
    {
      name: 'the parameter twice (its own first)',
      input: at('/api/v1/points?customer_id=c-42&customer_id=c-43', query),
      reason: 'owner_value_missing',
    },
    {
      name: 'its own id only in the path when the query is checked',
      input: at('/api/v1/c-42/points?id=c-42', query),
      reason: 'owner_value_missing',
    },
    {
      name: 'a token without the customer id claim',
      input: at('/api/v1/customers/c-42', segment, 'Bearer basic'),
      reason: 'no_customer_id',
    },
    {
      name: 'a numeric customer id claim',
      input: at('/api/v1/customers/42', segment, 'Bearer customerNumeric'),
      reason: 'no_customer_id',
    },
    {
      name: 'an empty customer id claim',
      input: at('/api/v1/customers/', segment, 'Bearer customerEmpty'),
      reason: 'no_customer_id',
    },
    {
      name: 'no customer id claim configured',
      input: at('/api/v1/customers/c-42', segment),
      policy,
      reason: 'no_customer_id',
    },
    { name: 'the uid when the gateway says so', input: at('/api/v1/customers/user-c42', segment), policy: byUid },
    {
      name: 'the customer id when the gateway compares the uid',
      input: at('/api/v1/customers/c-42', segment),
      policy: byUid,
      reason: 'not_owner',
    },
    {
      name: 'an unreadable segment index',
      input: at('/api/v1/customers/c-42', { [authzContextKeys.ownerPathSegment]: 'four' }),
      reason: 'owner_unreadable',
    },
    {
      name: 'segment 0 (before the first "/")',
      input: at('/api/v1/customers/c-42', { [authzContextKeys.ownerPathSegment]: '0' }),
      reason: 'owner_unreadable',
    },
    {
      name: 'both a segment and a query',
      input: at('/api/v1/customers/c-42?customer_id=c-42', { ...segment, ...query }),
      reason: 'owner_unreadable',
    },
  ];

  it.each(cases.map((c) => ({ ...c, outcome: c.reason ?? 'allowed' })))(
    '$name: $outcome',
    async ({ input: request, policy: p, reason }) => {
      const decision = await decide(request, p ?? owned, verify);
      if (reason === undefined) expect(decision.allow).toBe(true);
      else expect(decision).toMatchObject({ allow: false, code: 'INSUFFICIENT_PERMISSIONS', reason });
    },
  );

  it('checks the permissions first', async () => {
    const request = { ...at('/api/v1/customers/c-43', segment) };
    request.route = { ...request.route, permissions: ['delete:everything'] };
    expect(await decide(request, owned, verify)).toMatchObject({ reason: 'missing_permissions' });
  });

  it('reads the path from :path when no path is given', async () => {
    const { path: _path, ...request } = at('/ignored', segment);
    request.headers = { ...request.headers, ':path': '/api/v1/customers/c-42' };
    expect((await decide(request, owned, verify)).allow).toBe(true);
  });
});

describe('decide: dry-run', () => {
  const dry = (opts: {
    authorization?: string;
    permissions?: string;
    dryRun?: string;
    headers?: Record<string, string>;
  }) => {
    const base = input(opts);
    return {
      ...base,
      route: routeRequirements({
        [authzContextKeys.routeId]: 'customer-profile',
        ...(opts.permissions !== undefined ? { [authzContextKeys.permissions]: opts.permissions } : {}),
        [authzContextKeys.dryRun]: opts.dryRun ?? 'true',
      }),
    };
  };

  it('lets a caller without the permission through, with its identity and the code it would have had', async () => {
    const decision = await decide(
      dry({ authorization: 'Bearer basic', permissions: 'create:appointments' }),
      policy,
      verify,
    );
    expect(decision).toMatchObject({
      allow: true,
      identity: { userId: 'user-basic' },
      dryRunDenied: {
        code: 'INSUFFICIENT_PERMISSIONS',
        reason: 'missing_permissions',
        missingPermissions: ['create:appointments'],
      },
    });
    expect(headersOf(decision)).toMatchObject({
      [identityHeaders.userId]: 'user-basic',
      'x-sekisho-dry-run-denied': 'INSUFFICIENT_PERMISSIONS',
    });
  });

  it('lets a refused sign-in provider through the same way', async () => {
    const decision = await decide(dry({ authorization: 'Bearer anonymous' }), policy, verify);
    expect(decision).toMatchObject({
      allow: true,
      dryRunDenied: { code: 'INVALID_TOKEN', reason: 'sign_in_provider_not_allowed' },
    });
  });

  it.each([
    ['tenantA', 'tenant_not_allowed'],
    ['noProvider', 'sign_in_provider_missing'],
  ])('still refuses %s (%s): its uid may not be a user of this project', async (token, reason) => {
    const decision = await decide(dry({ authorization: `Bearer ${token}` }), policy, verify);
    expect(decision).toMatchObject({ allow: false, code: 'INVALID_TOKEN', reason });
  });

  it.each([
    ['no token', undefined, 'MISSING_TOKEN'],
    ['a forged token', 'Bearer forged', 'INVALID_TOKEN'],
    ['an expired token', 'Bearer expired', 'TOKEN_EXPIRED'],
  ])('still refuses %s: nobody would be verified', async (_name, authorization, code) => {
    const decision = await decide(dry(authorization ? { authorization } : {}), policy, verify);
    expect(decision).toMatchObject({ allow: false, code });
  });

  it('adds no mark for a caller the policy allows, and removes a client-sent one', async () => {
    const decision = await decide(
      dry({ authorization: 'Bearer basic', headers: { 'x-sekisho-dry-run-denied': 'none' } }),
      policy,
      verify,
    );
    expect(decision.allow && decision.dryRunDenied).toBeUndefined();
    expect(headersOf(decision)['x-sekisho-dry-run-denied']).toBeUndefined();
    expect(decision.allow && decision.headersToRemove).toContain('x-sekisho-dry-run-denied');
  });

  it.each(['false', 'TRUE', '1', ''])('enforces for sekisho.dry_run=%j', async (value) => {
    const decision = await decide(
      dry({ authorization: 'Bearer basic', permissions: 'create:appointments', dryRun: value }),
      policy,
      verify,
    );
    expect(decision).toMatchObject({ allow: false, code: 'INSUFFICIENT_PERMISSIONS' });
  });
});

describe('decide: sign-in provider and tenant', () => {
  const withProviders = variant({ signInProviders: ['password', 'anonymous'] });
  const withTenants = variant({ tenants: ['salon-a'] });
  const cases: Array<{ token: string; policy?: CompiledPolicy; reason?: string }> = [
    { token: 'basic' },
    { token: 'google' },
    { token: 'anonymous', reason: 'sign_in_provider_not_allowed' },
    { token: 'noProvider', reason: 'sign_in_provider_missing' },
    { token: 'noFirebase', reason: 'sign_in_provider_missing' },
    { token: 'arrayFirebase', reason: 'sign_in_provider_missing' },
    { token: 'numericProvider', reason: 'sign_in_provider_missing' },
    { token: 'anonymous', policy: withProviders },
    { token: 'basic', policy: withProviders },
    { token: 'google', policy: withProviders, reason: 'sign_in_provider_not_allowed' },
    { token: 'tenantA', reason: 'tenant_not_allowed' },
    { token: 'tenantA', policy: withTenants },
    { token: 'tenantB', policy: withTenants, reason: 'tenant_not_allowed' },
    { token: 'tenantNumber', policy: withTenants, reason: 'tenant_not_allowed' },
    // Tenants configured do not turn away the project's own users.
    { token: 'basic', policy: withTenants },
  ];

  const named = cases.map((c) => ({
    ...c,
    setting: c.policy === withProviders ? 'providers password, anonymous' : c.policy ? 'tenant salon-a' : 'defaults',
    outcome: c.reason ?? 'allowed',
  }));
  it.each(named)('$token under $setting: $outcome', async ({ token, ...rest }) => {
    const decision = await decide(input({ authorization: `Bearer ${token}` }), rest.policy ?? policy, verify);
    if (rest.reason === undefined) expect(decision.allow).toBe(true);
    else expect(decision).toMatchObject({ allow: false, code: 'INVALID_TOKEN', reason: rest.reason });
  });

  it('does not look at how the caller signed in on an auth: none route', async () => {
    expect((await decide(input({ auth: 'none', authorization: 'Bearer anonymous' }), policy, verify)).allow).toBe(true);
  });
});

describe('decide: Envoy header limits', () => {
  // Envoy checks its limits again after applying an OK answer, and sends an empty 500 when
  // the answer pushed the request over: ext-authz refuses with 431 instead.
  const limited = (opts: { authorization?: string; auth?: string }, count: number, bytes: number): CheckInput => ({
    ...input(opts),
    headerSize: { count, bytes },
    route: {
      ...input(opts).route,
      headerLimits: { count: 80, bytes: 8192 },
    },
  });

  it('allows when the identity headers still fit', async () => {
    const decision = await decide(limited({ authorization: 'Bearer verified' }, 74, 4000), policy, verify);
    expect(decision.allow).toBe(true);
  });

  it('refuses with 431 when the identity headers would pass the count', async () => {
    const decision = await decide(limited({ authorization: 'Bearer verified' }, 75, 4000), policy, verify);
    expect(decision).toMatchObject({
      allow: false,
      code: 'REQUEST_HEADERS_TOO_LARGE',
      reason: 'headers_over_limit',
      userId: 'user-verified',
    });
  });

  it('refuses with 431 when the identity headers would pass the size', async () => {
    const decision = await decide(limited({ authorization: 'Bearer verified' }, 20, 8100), policy, verify);
    expect(decision).toMatchObject({ allow: false, code: 'REQUEST_HEADERS_TOO_LARGE' });
  });

  it('refuses on a route without authentication too, when Envoy already holds too many', async () => {
    expect(await decide(limited({ auth: 'none' }, 80, 100), policy, verify)).toMatchObject({ allow: true });
    expect(await decide(limited({ auth: 'none' }, 81, 100), policy, verify)).toMatchObject({
      allow: false,
      code: 'REQUEST_HEADERS_TOO_LARGE',
    });
  });

  it('does not count without the limits or the sizes (an older control plane or Envoy)', async () => {
    const unknownSize = { ...limited({ authorization: 'Bearer verified' }, 500, 1e6) };
    delete unknownSize.headerSize;
    expect(await decide(unknownSize, policy, verify)).toMatchObject({ allow: true });
  });
});

describe('routeRequirements', () => {
  it.each<{ ext: Record<string, string>; expected: object }>([
    { ext: {}, expected: { routeId: undefined, auth: 'required', permissions: [], owner: undefined, dryRun: false } },
    { ext: { [authzContextKeys.dryRun]: 'true' }, expected: { dryRun: true } },
    { ext: { [authzContextKeys.auth]: 'none' }, expected: { auth: 'none' } },
    { ext: { [authzContextKeys.auth]: 'optional' }, expected: { auth: 'optional' } },
    { ext: { [authzContextKeys.auth]: 'required' }, expected: { auth: 'required' } },
    { ext: { [authzContextKeys.auth]: '' }, expected: { auth: 'required' } },
    { ext: { [authzContextKeys.auth]: 'Optional' }, expected: { auth: 'required' } },
    { ext: { [authzContextKeys.permissions]: '' }, expected: { permissions: [] } },
    { ext: { [authzContextKeys.permissions]: ' a , ,b,, ' }, expected: { permissions: ['a', 'b'] } },
    { ext: { [authzContextKeys.routeId]: 'r1' }, expected: { routeId: 'r1' } },
    { ext: {}, expected: { headerLimits: undefined } },
    {
      ext: { [authzContextKeys.maxRequestHeaders]: '80', [authzContextKeys.maxRequestHeaderBytes]: '32768' },
      expected: { headerLimits: { count: 80, bytes: 32768 } },
    },
    { ext: { [authzContextKeys.maxRequestHeaders]: '80' }, expected: { headerLimits: undefined } },
    {
      ext: { [authzContextKeys.maxRequestHeaders]: '-1', [authzContextKeys.maxRequestHeaderBytes]: '1e3' },
      expected: { headerLimits: undefined },
    },
  ])('reads $ext', ({ ext, expected }) => {
    expect(routeRequirements(ext)).toMatchObject(expected);
  });
});

describe('bearerToken', () => {
  it.each([
    [undefined, undefined],
    ['', undefined],
    ['Bearer', undefined],
    ['Bearer ', undefined],
    ['Bearer a b', undefined],
    ['Bearer\ta', undefined],
    ['Bearera', undefined],
    ['Token a', undefined],
    ['Bearer a,Bearer b', undefined],
    ['Bearer abc.def.ghi', 'abc.def.ghi'],
    ['bEaReR abc', 'abc'],
  ])('%j → %j', (header, token) => {
    expect(bearerToken(header)).toBe(token);
  });
});

describe('decide: account state', () => {
  const at = 1_800_000_000;
  const signedInAt = (uid: string, authTime: number, payload: Record<string, unknown> = {}) =>
    claims(uid, { auth_time: authTime, iat: authTime, ...payload });
  const accountTokens: Record<string, VerifyResult> = {
    before: signedInAt('user-r', at - 1),
    same: signedInAt('user-r', at),
    disabled: signedInAt('user-d', at + 100),
    vip: signedInAt('user-g', at, { tier: 'basic_customer' }),
    owner: signedInAt('user-c', at, { customer_id: 'c-old' }),
  };
  const accountVerify: VerifyToken = async (token) =>
    accountTokens[token] ?? { ok: false, code: 'INVALID_TOKEN', reason: 'malformed' };
  const view = (entries: Record<string, AccountEntry>, loaded = true): AccountView => ({
    loaded,
    get: (uid) => entries[uid],
  });
  const accounts = view({
    'user-r': { validAfter: at },
    'user-d': { disabled: true },
    'user-g': { group: 'verified_customer' },
    'user-c': { customerId: 'c-new' },
  });

  it.each([
    { token: 'before', code: 'TOKEN_REVOKED', reason: 'token_revoked' },
    { token: 'same', code: 'allowed', reason: undefined },
    { token: 'disabled', code: 'USER_INACTIVE', reason: 'account_disabled' },
  ])('$token → $code', async ({ token, code, reason }) => {
    const decision = await decide(input({ authorization: `Bearer ${token}` }), policy, accountVerify, accounts);
    expect(decision.allow ? 'allowed' : decision.code).toBe(code);
    if (!decision.allow) expect(decision).toMatchObject({ reason, userId: expect.any(String) });
  });

  it('refuses a disabled account on a dry-run route too', async () => {
    const dry = input({ authorization: 'Bearer disabled' });
    dry.route = { ...dry.route, dryRun: true };
    expect(await decide(dry, policy, accountVerify, accounts)).toMatchObject({ allow: false, code: 'USER_INACTIVE' });
  });

  it('answers 503 for a token until the state was first loaded, but lets none routes through', async () => {
    const notLoaded = view({}, false);
    expect(await decide(input({ authorization: 'Bearer same' }), policy, accountVerify, notLoaded)).toMatchObject({
      allow: false,
      code: 'SERVICE_UNAVAILABLE',
      reason: 'accounts_not_loaded',
    });
    expect((await decide(input({ auth: 'none' }), policy, accountVerify, notLoaded)).allow).toBe(true);
  });

  it('uses a group override in place of the claim, strictly', async () => {
    const decision = await decide(
      input({ authorization: 'Bearer vip', permissions: 'create:appointments' }),
      policy,
      accountVerify,
      accounts,
    );
    expect(headersOf(decision)[identityHeaders.group]).toBe('verified_customer');
    const unknown = view({ 'user-g': { group: 'platinum' } });
    expect(
      await decide(
        input({ authorization: 'Bearer vip', permissions: 'read:own_profile' }),
        policy,
        accountVerify,
        unknown,
      ),
    ).toMatchObject({ allow: false, code: 'INSUFFICIENT_PERMISSIONS' });
  });

  it('uses a customer id override for ownership', async () => {
    const owned = variant({ customerIdClaim: 'customer_id' });
    const route = (id: string): CheckInput => ({
      headers: { ':path': `/api/v1/customers/${id}`, authorization: 'Bearer owner' },
      route: routeRequirements({ [authzContextKeys.ownerPathSegment]: '4' }),
    });
    expect((await decide(route('c-new'), owned, accountVerify, accounts)).allow).toBe(true);
    expect(await decide(route('c-old'), owned, accountVerify, accounts)).toMatchObject({ reason: 'not_owner' });
  });

  it('decides as before without the feature', async () => {
    expect((await decide(input({ authorization: 'Bearer disabled' }), policy, accountVerify)).allow).toBe(true);
  });
});

describe('a mesh inbound check (a sidecar in front of a service)', () => {
  const nowMs = Date.UTC(2026, 0, 1, 12, 0, 0);
  const customer = 'spiffe://salon.test/ns/salon/sa/customer';
  const forwarded = {
    [identityHeaders.userId]: 'user-basic',
    [identityHeaders.email]: 'taro@example.com',
    [identityHeaders.emailVerified]: 'true',
    [identityHeaders.group]: 'basic_customer',
    // What a forwarding app claims: recomputed from the group, never believed.
    [identityHeaders.permissions]: 'create:appointments',
  };
  function meshInput(
    opts: { peer?: string; headers?: Record<string, string>; permissions?: string; trustDomain?: string } = {},
  ): CheckInput {
    return {
      headers: { ':path': '/appointments/7', ...(opts.headers ?? forwarded) },
      route: routeRequirements({
        [authzContextKeys.routeId]: 'appointment:get-appointments-prefix',
        [authzContextKeys.permissions]: opts.permissions ?? 'read:own_appointments',
        [authzContextKeys.meshTrustDomain]: opts.trustDomain ?? 'salon.test',
        [authzContextKeys.meshChainSeconds]: '60',
      }),
      ...('peer' in opts ? (opts.peer === undefined ? {} : { peerPrincipal: opts.peer }) : { peerPrincipal: customer }),
      nowMs,
    };
  }
  const accounts: AccountView = {
    loaded: true,
    get: (uid) =>
      (
        ({
          'user-disabled': { disabled: true },
          'user-signed-out-now': { validAfter: nowMs / 1000 - 5 },
          'user-signed-out-long-ago': { validAfter: nowMs / 1000 - 3600 },
          'user-promoted': { group: 'verified_customer' },
        }) as Record<string, AccountEntry>
      )[uid],
  };
  const threats = new ThreatTable();
  threats.replace([
    { kind: 'user', subject: 'user-blocked', rule: 'credential_stuffing', severity: 'high', untilMs: nowMs + 60_000 },
  ]);
  const as = (uid: string, group = 'basic_customer') => ({
    [identityHeaders.userId]: uid,
    [identityHeaders.group]: group,
  });

  it.each<{ name: string; input: CheckInput; expected: Partial<Denial> }>([
    {
      name: 'no peer principal (no workload identity)',
      input: meshInput({ peer: undefined }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'no_peer_identity' },
    },
    {
      name: 'an empty peer principal',
      input: meshInput({ peer: '' }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'no_peer_identity' },
    },
    {
      name: 'a workload of another trust domain',
      input: meshInput({ peer: 'spiffe://evil.test/ns/salon/sa/customer' }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'peer_not_in_trust_domain' },
    },
    {
      name: 'a trust domain that only starts like ours',
      input: meshInput({ peer: 'spiffe://salon.test.evil/ns/salon/sa/customer' }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'peer_not_in_trust_domain' },
    },
    {
      name: 'a peer that is no SPIFFE id (a certificate subject)',
      input: meshInput({ peer: 'CN=customer' }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'peer_not_in_trust_domain' },
    },
    {
      name: 'no end user on a route that requires a permission',
      input: meshInput({ headers: {} }),
      expected: { code: 'MISSING_TOKEN', reason: 'no_forwarded_user' },
    },
    {
      name: 'a user whose group lacks the permission (a forwarded permission list is not believed)',
      input: meshInput({ permissions: 'create:appointments' }),
      expected: {
        code: 'INSUFFICIENT_PERMISSIONS',
        reason: 'missing_permissions',
        userId: 'user-basic',
        group: 'basic_customer',
        missingPermissions: ['create:appointments'],
      },
    },
    {
      name: 'a group the policy does not define',
      input: meshInput({ headers: as('user-x', 'platinum') }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'missing_permissions' },
    },
    {
      name: 'no group header (the ingress decided no group): not the default group',
      input: meshInput({ headers: { [identityHeaders.userId]: 'user-x' } }),
      expected: { code: 'INSUFFICIENT_PERMISSIONS', reason: 'missing_permissions' },
    },
    {
      name: 'a disabled account, mid-chain',
      input: meshInput({ headers: as('user-disabled') }),
      expected: { code: 'USER_INACTIVE', reason: 'account_disabled', userId: 'user-disabled' },
    },
    {
      name: 'a user signed out everywhere while the chain may be under way',
      input: meshInput({ headers: as('user-signed-out-now') }),
      expected: { code: 'TOKEN_REVOKED', reason: 'signed_out_during_chain' },
    },
    {
      name: 'a user the threat detector blocked',
      input: meshInput({ headers: as('user-blocked') }),
      expected: { code: 'USER_BLOCKED', reason: 'user_blocked', userId: 'user-blocked' },
    },
  ])('refuses $name', async ({ input: check, expected }) => {
    const decision = await decide(check, policy, verify, accounts, threats);
    expect(decision).toMatchObject({ allow: false, ...expected });
  });

  it('answers 503 until the account state was loaded', async () => {
    const decision = await decide(meshInput(), policy, verify, { loaded: false, get: () => undefined });
    expect(decision).toMatchObject({ allow: false, code: 'SERVICE_UNAVAILABLE', reason: 'accounts_not_loaded' });
  });

  it('allows a user with the permission: the identity headers are exactly what was decided', async () => {
    verifyCalls.length = 0;
    const decision = await decide(
      meshInput({ headers: { ...forwarded, 'x-sekisho-dry-run-denied': 'INSUFFICIENT_PERMISSIONS' } }),
      policy,
      verify,
      accounts,
      threats,
    );
    expect(decision.allow).toBe(true);
    expect(headersOf(decision)).toEqual({
      [identityHeaders.userId]: 'user-basic',
      [identityHeaders.email]: 'taro@example.com',
      [identityHeaders.emailVerified]: 'true',
      [identityHeaders.group]: 'basic_customer',
      // From the policy's group, not the forwarded claim of create:appointments.
      [identityHeaders.permissions]: 'read:own_profile,read:own_appointments',
    });
    if (decision.allow) {
      expect(decision.headersToRemove).toContain(identityHeaders.phone);
      expect(decision.headersToRemove).toContain('x-sekisho-dry-run-denied');
    }
    // No token travels in the mesh: nothing is verified.
    expect(verifyCalls).toEqual([]);
  });

  it("applies an operator's group override and a sign-out older than any chain", async () => {
    const promoted = await decide(
      meshInput({ headers: as('user-promoted'), permissions: 'create:appointments' }),
      policy,
      verify,
      accounts,
    );
    expect(headersOf(promoted)[identityHeaders.group]).toBe('verified_customer');
    expect((await decide(meshInput({ headers: as('user-signed-out-long-ago') }), policy, verify, accounts)).allow).toBe(
      true,
    );
  });

  it("lets a workload's own call (no end user) through where no permission is required, removing every Sekisho header", async () => {
    const decision = await decide(
      meshInput({ headers: { [identityHeaders.group]: 'admin' }, permissions: '' }),
      policy,
      verify,
      accounts,
    );
    expect(decision).toMatchObject({ allow: true, identity: undefined, headersToSet: [] });
    if (decision.allow) expect(decision.headersToRemove).toEqual(expect.arrayContaining([...allIdentityHeaders]));
  });

  it('is only a mesh check when the control plane marked the route so', () => {
    expect(routeRequirements({ [authzContextKeys.permissions]: 'a' }).mesh).toBeUndefined();
    expect(routeRequirements({ [authzContextKeys.meshTrustDomain]: 'salon.test' }).mesh).toEqual({
      trustDomain: 'salon.test',
      principalPrefix: 'spiffe://salon.test/',
      chainSeconds: 60,
    });
  });
});
