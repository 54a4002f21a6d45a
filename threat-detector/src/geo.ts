// Where a sign-in happened, and how far that is from where the user usually signs in. Pure:
// the CDN's headers and the GeoIP lookup are read by the caller.

export interface Place {
  latitude: number;
  longitude: number;
  /** Where the place came from: the CDN's headers, or the GeoIP database by the client IP. */
  source: 'header' | 'geoip';
}

/** A place the user signed in from, as kept in Redis (its time decides when it is forgotten). */
export interface UsualPlace {
  latitude: number;
  longitude: number;
  atMs: number;
}

const earthRadiusKm = 6371.0088;
const radians = (degrees: number) => (degrees * Math.PI) / 180;

/** Great-circle distance on the mean Earth sphere (haversine), in km. */
export function distanceKm(a: Pick<Place, 'latitude' | 'longitude'>, b: Pick<Place, 'latitude' | 'longitude'>) {
  const dLat = radians(b.latitude - a.latitude);
  const dLon = radians(b.longitude - a.longitude);
  const h =
    Math.sin(dLat / 2) ** 2 + Math.cos(radians(a.latitude)) * Math.cos(radians(b.latitude)) * Math.sin(dLon / 2) ** 2;
  return 2 * earthRadiusKm * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** Decimal degrees as a CDN writes them ("35.6895"); anything else, or out of range, is no place. */
export function placeFromHeaders(latitude: string | undefined, longitude: string | undefined): Place | undefined {
  const number = (text: string | undefined, limit: number) => {
    if (text === undefined || !/^-?\d{1,3}(\.\d{1,12})?$/.test(text.trim())) return undefined;
    const value = Number(text);
    return Math.abs(value) <= limit ? value : undefined;
  };
  const lat = number(latitude, 90);
  const lon = number(longitude, 180);
  return lat === undefined || lon === undefined ? undefined : { latitude: lat, longitude: lon, source: 'header' };
}

export type SignInVerdict =
  /** No usual place yet: this one becomes the first. */
  | { kind: 'first' }
  /** Within the distance of at least one usual place: recorded as usual. */
  | { kind: 'usual'; nearestKm: number }
  /** Farther than the distance from every usual place: additional authentication. */
  | { kind: 'far'; nearestKm: number };

/** The user's usual places not older than rememberMs at nowMs, judged against this sign-in. */
export function judgeSignIn(
  place: Pick<Place, 'latitude' | 'longitude'>,
  usual: readonly UsualPlace[],
  rule: { distanceKm: number; rememberMs: number },
  nowMs: number,
): SignInVerdict {
  const remembered = usual.filter((known) => nowMs - known.atMs < rule.rememberMs);
  if (remembered.length === 0) return { kind: 'first' };
  const nearestKm = Math.min(...remembered.map((known) => distanceKm(place, known)));
  return nearestKm > rule.distanceKm ? { kind: 'far', nearestKm } : { kind: 'usual', nearestKm };
}
