// Route matches: "METHOD /path" or "/path"; a trailing "/*" matches every path under it.
import { matchPattern } from '../definition/schema';
import type { RouteIR } from './types';

export type ParsedMatch = Pick<RouteIR, 'method' | 'path'>;

/** Only called on matches the schema accepted. */
export function parseMatch(text: string): ParsedMatch {
  const parsed = matchPattern.exec(text);
  if (!parsed) throw new Error(`unvalidated route match: ${text}`);
  const [, method, path = '/', star] = parsed;
  return { method, path: { kind: star ? 'prefix' : 'exact', value: path } };
}

/**
 * The default route id: a slug of method and path, stable across edits of other routes,
 * e.g. "POST /api/v1/appointments" → post-api-v1-appointments, "/api/v1/auth/*" →
 * api-v1-auth-prefix (so it never collides with the exact "/api/v1/auth").
 */
export function defaultRouteId(match: ParsedMatch): string {
  const words = [match.method?.toLowerCase(), ...match.path.value.toLowerCase().split(/[^a-z0-9]+/)];
  if (match.path.kind === 'prefix') words.push('prefix');
  return words.filter((word) => word !== undefined && word !== '').join('-') || 'root';
}
