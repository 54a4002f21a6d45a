// A MaxMind GeoLite2/GeoIP2 City database (THREAT_GEOIP_DATABASE): the place of a client
// address when the CDN sent no latitude and longitude. Read once at start-up into memory;
// lookups are synchronous and local (no network per sign-in).
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { type CityResponse, Reader } from 'maxmind';
import type { GeoIpLookup } from './detector';
import type { Place } from './geo';

export interface GeoIpDatabase extends GeoIpLookup {
  /** The database's type and build time, for /status and the start-up log. */
  readonly description: { type: string; builtAt: string };
}

/** Opens the file; refuses one that is not a City database (a Country one has no coordinates). */
export async function openGeoIpDatabase(path: string): Promise<GeoIpDatabase> {
  const reader = new Reader<CityResponse>(await readFile(path));
  const type = reader.metadata.databaseType;
  if (!/City/i.test(type)) throw new Error(`${path}: a ${type} database has no coordinates; use a City database`);
  return {
    description: { type, builtAt: reader.metadata.buildEpoch.toISOString() },
    lookup(ip: string): Place | undefined {
      if (isIP(ip) === 0) return undefined;
      const location = reader.get(ip)?.location;
      if (location === undefined || typeof location.latitude !== 'number' || typeof location.longitude !== 'number')
        return undefined;
      return { latitude: location.latitude, longitude: location.longitude, source: 'geoip' };
    },
  };
}
