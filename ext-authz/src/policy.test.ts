import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { describe, expect, it } from 'vitest';
import { compileAuthzPolicy } from './policy';

const valid = AuthzPolicy.fromPartial({
  firebase: { projectId: 'salon-prod' },
  groupClaim: 'tier',
  defaultGroup: 'basic_customer',
  groups: { basic_customer: { permissions: ['read:own_profile'] }, premium_customer: { permissions: [] } },
});

const variant = (patch: Partial<AuthzPolicy>) => AuthzPolicy.fromPartial({ ...valid, ...patch });

describe('compileAuthzPolicy', () => {
  it.each([
    ['the reference policy', valid],
    ['a demo project id of the emulator', variant({ firebase: { projectId: 'demo-test' } })],
    ['no group claim', variant({ groupClaim: '' })],
    ['no default group', variant({ defaultGroup: '' })],
    [
      'listed sign-in providers',
      variant({ signInProviders: ['password', 'google.com', 'oidc.salon-idp', 'anonymous'] }),
    ],
    ['listed tenants', variant({ tenants: ['salon-a-x1y2z', 'B2'] })],
  ])('accepts %s', (_name, policy) => {
    expect(() => compileAuthzPolicy(policy)).not.toThrow();
  });

  it.each([
    ['no firebase section', variant({ firebase: undefined }), 'firebase.project_id is empty'],
    ['an empty project id', variant({ firebase: { projectId: '' } }), 'firebase.project_id is empty'],
    ['a project id that is a URL', variant({ firebase: { projectId: 'a/b' } }), 'is not a Firebase project id'],
    ['a group claim with a dot', variant({ groupClaim: 'firebase.tier' }), 'is not a claim name'],
    ['a default group that is not defined', variant({ defaultGroup: 'gold' }), 'default_group "gold"'],
    ['a default group inherited from Object', variant({ defaultGroup: 'constructor' }), 'default_group'],
    [
      'a group name with a space',
      variant({ groups: { 'a b': { permissions: [] } }, defaultGroup: '' }),
      'invalid name',
    ],
    [
      'a permission with a comma',
      variant({ groups: { basic_customer: { permissions: ['read,write'] } } }),
      'permission "read,write" is invalid',
    ],
    [
      'a permission with a newline',
      variant({ groups: { basic_customer: { permissions: ['read\nx'] } } }),
      'is invalid',
    ],
    [
      'a sign-in provider with a space',
      variant({ signInProviders: ['google com'] }),
      'sign_in_providers: "google com"',
    ],
    ['an empty sign-in provider', variant({ signInProviders: [''] }), 'sign_in_providers: ""'],
    ['a tenant with a dot', variant({ tenants: ['a.b'] }), 'tenants: "a.b" is invalid'],
  ])('rejects %s', (_name, policy, message) => {
    expect(() => compileAuthzPolicy(policy)).toThrow(message);
  });

  it('rejects a group named __proto__ as it arrives on the wire, instead of losing it', () => {
    // JSON.parse makes __proto__ an own key, so the encoder puts it on the wire.
    const groups = JSON.parse('{"__proto__": {"permissions": ["read:own_profile"]}}');
    const bytes = AuthzPolicy.encode({ ...valid, groups, defaultGroup: '' }).finish();
    expect(() => compileAuthzPolicy(AuthzPolicy.decode(bytes))).toThrow('a group is named "__proto__"');
  });

  it('compiles groups into sets and the joined header value, once', () => {
    const compiled = compileAuthzPolicy(
      variant({
        groups: { basic_customer: { permissions: ['read:own_profile', 'read:own_points', 'read:own_profile'] } },
      }),
    );
    expect(compiled.projectId).toBe('salon-prod');
    expect(compiled.defaultGroup?.name).toBe('basic_customer');
    expect(compiled.signInProviders).toBeUndefined();
    expect(compiled.tenants).toEqual(new Set());
    expect(compiled.groups.get('basic_customer')).toEqual({
      name: 'basic_customer',
      permissions: new Set(['read:own_profile', 'read:own_points']),
      permissionList: ['read:own_profile', 'read:own_points'],
      permissionHeader: 'read:own_profile,read:own_points',
    });
  });
});

describe('compileAuthzPolicy: sign-in', () => {
  it('keeps the listed providers and tenants in sets, read by every Check', () => {
    const compiled = compileAuthzPolicy(variant({ signInProviders: ['password', 'phone'], tenants: ['t-1'] }));
    expect(compiled.signInProviders).toEqual(new Set(['password', 'phone']));
    expect(compiled.tenants).toEqual(new Set(['t-1']));
  });
});
