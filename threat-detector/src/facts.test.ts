import { describe, expect, it } from 'vitest';
import { factsOf } from './facts';
import { entry, referenceRules } from './test-entries';

describe('factsOf', () => {
  it.each([
    {
      name: "ext-authz's 401 for a failed token",
      e: { status: 401, extAuthzDenied: true, tokenFailed: true },
      failure: 'token',
    },
    { name: "ext-authz's 401 for a missing token", e: { status: 401, extAuthzDenied: true }, failure: undefined },
    { name: "the login route's own 401", e: { status: 401, route: 'sign-in' }, failure: 'login' },
    { name: "the login route's own 403", e: { status: 403, route: 'sign-in' }, failure: 'login' },
    { name: 'a 401 of another route', e: { status: 401, route: 'profile' }, failure: undefined },
    {
      name: "ext-authz's 403 (a permission, not authentication)",
      e: { status: 403, extAuthzDenied: true },
      failure: undefined,
    },
    { name: 'a served sign-in', e: { status: 200, route: 'sign-in' }, failure: undefined },
  ])('counts $name as failure: $failure', ({ e, failure }) => {
    const { facts, failure: kind } = factsOf(entry(e), referenceRules);
    expect(kind).toBe(failure);
    expect(facts.filter((fact) => fact.counter === 'failed_auth')).toEqual(
      failure ? [{ counter: 'failed_auth', subject: '203.0.113.7', amount: 1 }] : [],
    );
  });

  it("leaves ext-authz's 401s out when countTokenFailures is off", () => {
    const rules = {
      ...referenceRules,
      bruteForce: { failures: 5, withinMs: 900_000, blockMs: 3_600_000, countTokenFailures: false },
    };
    expect(factsOf(entry({ status: 401, extAuthzDenied: true, tokenFailed: true }), rules).facts).toEqual([]);
  });

  it("counts a verified user's call and the bytes Envoy sent", () => {
    expect(factsOf(entry({ user: 'uid-1', bytes: 5_000 }), referenceRules).facts).toEqual([
      { counter: 'calls', subject: 'uid-1', amount: 1 },
      { counter: 'bytes', subject: 'uid-1', amount: 5_000 },
    ]);
  });

  it('never takes the user from a request header: only ext-authz metadata names a verified user', () => {
    expect(factsOf(entry({ spoofedUserHeader: 'victim', bytes: 5_000 }), referenceRules).facts).toEqual([]);
  });

  it('counts nothing per user for an anonymous request, and nothing for a rule that is off', () => {
    expect(factsOf(entry({ bytes: 5_000 }), referenceRules).facts).toEqual([]);
    expect(factsOf(entry({ user: 'uid-1', bytes: 1 }), { loginRoutes: [] }).facts).toEqual([]);
  });

  it("takes a sign-in fact from ext-authz's auth_time and second factor, the place from the CDN's headers", () => {
    const place = { latitude: 35.6895, longitude: 139.6917 };
    expect(
      factsOf(entry({ user: 'uid-1', authTimeS: 1_700_000_000, place, ip: '198.51.100.4' }), referenceRules).signIn,
    ).toEqual({
      user: 'uid-1',
      authTimeS: 1_700_000_000,
      secondFactor: false,
      ip: '198.51.100.4',
      place: { ...place, source: 'header' },
    });
    expect(factsOf(entry({ user: 'uid-1', authTimeS: 1, secondFactor: 'phone' }), referenceRules).signIn).toMatchObject(
      {
        secondFactor: true,
        place: undefined,
      },
    );
  });

  it('takes no sign-in without a verified user, without auth_time, or with the rule off', () => {
    const { geoAnomaly: _, ...rulesWithoutGeo } = referenceRules;
    expect(factsOf(entry({ spoofedUserHeader: 'victim', authTimeS: 1 }), referenceRules).signIn).toBeUndefined();
    expect(factsOf(entry({ user: 'uid-1' }), referenceRules).signIn).toBeUndefined();
    expect(factsOf(entry({ user: 'uid-1', authTimeS: 1 }), rulesWithoutGeo).signIn).toBeUndefined();
  });
});
