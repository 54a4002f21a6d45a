// The geo anomaly rule's arithmetic: the haversine distance, the CDN's headers read strictly,
// and a sign-in judged against the usual places at the threshold and past their memory.
import { describe, expect, it } from 'vitest';
import { distanceKm, judgeSignIn, placeFromHeaders, type UsualPlace } from './geo';

const tokyo = { latitude: 35.6895, longitude: 139.6917 };
/** Degrees of latitude per km on the mean sphere: a point d km due north is exactly d km away. */
const degreesPerKm = 180 / (Math.PI * 6371.0088);
const north = (from: typeof tokyo, km: number) => ({
  latitude: from.latitude + km * degreesPerKm,
  longitude: from.longitude,
});
const rule = { distanceKm: 1_000, rememberMs: 90 * 86_400_000 };
const now = 1_700_000_000_000;
const usualTokyo: UsualPlace[] = [{ ...tokyo, atMs: now - 86_400_000 }];

describe('distanceKm', () => {
  it.each([
    { name: 'Tokyo to Osaka', a: tokyo, b: { latitude: 34.6937, longitude: 135.5023 }, km: 397 },
    {
      name: 'London to Paris',
      a: { latitude: 51.5074, longitude: -0.1278 },
      b: { latitude: 48.8566, longitude: 2.3522 },
      km: 344,
    },
    { name: 'Tokyo to New York', a: tokyo, b: { latitude: 40.7128, longitude: -74.006 }, km: 10_849 },
    { name: 'a place to itself', a: tokyo, b: tokyo, km: 0 },
  ])('$name is about $km km', ({ a, b, km }) => {
    expect(Math.round(distanceKm(a, b))).toBeGreaterThanOrEqual(km - 2);
    expect(Math.round(distanceKm(a, b))).toBeLessThanOrEqual(km + 2);
  });

  it('is the same both ways across the antimeridian', () => {
    const fiji = { latitude: -17.7, longitude: 178.0 };
    const samoa = { latitude: -13.8, longitude: -172.1 };
    expect(distanceKm(fiji, samoa)).toBeCloseTo(distanceKm(samoa, fiji), 6);
    expect(distanceKm(fiji, samoa)).toBeLessThan(1_200);
  });
});

describe('judgeSignIn', () => {
  it.each([
    { name: '999 km away is usual', km: 999, kind: 'usual' },
    { name: '1,000 km away is not more than 1,000: usual', km: 1_000 - 1e-6, kind: 'usual' },
    { name: '1,001 km away is far', km: 1_001, kind: 'far' },
  ])('$name', ({ km, kind }) => {
    expect(judgeSignIn(north(tokyo, km), usualTokyo, rule, now).kind).toBe(kind);
  });

  it('takes the nearest usual place: far from one, near another is usual', () => {
    const osaka = { latitude: 34.6937, longitude: 135.5023, atMs: now - 1_000 };
    const london = { latitude: 51.5074, longitude: -0.1278, atMs: now - 2_000 };
    expect(judgeSignIn(tokyo, [london, osaka], rule, now)).toMatchObject({ kind: 'usual' });
    expect(judgeSignIn(tokyo, [london], rule, now)).toMatchObject({ kind: 'far' });
  });

  it('makes the first sign-in ever the first usual place', () => {
    expect(judgeSignIn(tokyo, [], rule, now)).toEqual({ kind: 'first' });
  });

  it('forgets usual places older than rememberFor (then a far sign-in is a first one)', () => {
    const old: UsualPlace[] = [{ ...tokyo, atMs: now - rule.rememberMs }];
    expect(judgeSignIn(north(tokyo, 5_000), old, rule, now)).toEqual({ kind: 'first' });
    expect(judgeSignIn(north(tokyo, 5_000), old, rule, now - 1)).toMatchObject({ kind: 'far' });
  });
});

describe('placeFromHeaders', () => {
  it.each([
    { lat: '35.6895', lon: '139.6917', place: { latitude: 35.6895, longitude: 139.6917, source: 'header' } },
    { lat: '-33.8688', lon: '-151', place: { latitude: -33.8688, longitude: -151, source: 'header' } },
    { lat: '91', lon: '0', place: undefined },
    { lat: '0', lon: '180.5', place: undefined },
    { lat: '1e2', lon: '0', place: undefined },
    { lat: 'NaN', lon: '0', place: undefined },
    { lat: '35.1', lon: undefined, place: undefined },
    { lat: '', lon: '', place: undefined },
  ])('reads lat $lat, lon $lon', ({ lat, lon, place }) => {
    expect(placeFromHeaders(lat, lon)).toEqual(place);
  });
});
