import { AuthzPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { describe, expect, it } from 'vitest';
import { validateAuthzPolicy } from './policy';

const valid = AuthzPolicy.fromPartial({
  firebase: { projectId: 'salon-prod' },
  groupClaim: 'tier',
  defaultGroup: 'basic_customer',
  groups: { basic_customer: { permissions: ['read:own_profile'] }, premium_customer: { permissions: [] } },
});

const variant = (patch: Partial<AuthzPolicy>) => AuthzPolicy.fromPartial({ ...valid, ...patch });

describe('validateAuthzPolicy', () => {
  it.each([
    ['the reference policy', valid],
    ['a demo project id of the emulator', variant({ firebase: { projectId: 'demo-test' } })],
    ['no group claim', variant({ groupClaim: '' })],
    ['no default group', variant({ defaultGroup: '' })],
  ])('accepts %s', (_name, policy) => {
    expect(() => validateAuthzPolicy(policy)).not.toThrow();
  });

  it.each([
    ['no firebase section', variant({ firebase: undefined }), 'firebase.project_id is empty'],
    ['an empty project id', variant({ firebase: { projectId: '' } }), 'firebase.project_id is empty'],
    ['a project id that is a URL', variant({ firebase: { projectId: 'a/b' } }), 'is not a Firebase project id'],
    ['a group claim with a dot', variant({ groupClaim: 'firebase.tier' }), 'is not a claim name'],
    ['a default group that is not defined', variant({ defaultGroup: 'gold' }), 'default_group "gold"'],
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
  ])('rejects %s', (_name, policy, message) => {
    expect(() => validateAuthzPolicy(policy)).toThrow(message);
  });
});
