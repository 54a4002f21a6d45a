// Definition → the browser-facing part of the IR: each route's CORS policy (edge.cors with
// the route's override), the security headers (and each route's changes to them), CSRF's
// trusted origins and compression.
import { parseDuration } from '../definition/duration';
import { corsOrigin, corsSchema } from '../definition/edge/cors';
import { simpleSecurityHeaders } from '../definition/edge/security-headers';
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import type { BrowserIR, CorsIR, HeaderOverrideIR, OriginIR, ResponseHeaderIR, RouteIR } from './types';

type Edge = GatewayDefinition['edge'];
type RouteInput = GatewayDefinition['routes'][number];
type SecurityHeadersInput = Edge['securityHeaders'];
type RouteSecurityHeadersInput = NonNullable<RouteInput['securityHeaders']>;

export interface BrowserBuild {
  browser: BrowserIR;
  /** By route index. */
  routes: Array<Pick<RouteIR, 'cors' | 'securityHeaders'>>;
}

export function buildBrowserIR(definition: GatewayDefinition, errors: FieldError[]): BrowserBuild {
  const { edge } = definition;
  const gatewayCors = edge.cors && corsIR(edge.cors);
  const gatewayHeaders = headerMap(edge.securityHeaders);

  const routes = definition.routes.map((route, index) => ({
    cors: routeCors(gatewayCors, route.cors, `routes[${index}].cors`, errors),
    securityHeaders: route.securityHeaders && headerOverride(gatewayHeaders, route.securityHeaders),
  }));

  const hsts = edge.securityHeaders.strictTransportSecurity;
  if (hsts !== false && hsts.preload && (!hsts.includeSubDomains || seconds(hsts.maxAge) < 31_536_000)) {
    errors.push({
      path: 'edge.securityHeaders.strictTransportSecurity.preload',
      message: 'browsers accept a preload entry only with includeSubDomains and a maxAge of at least 365d',
    });
  }

  const trustedOrigins = uniqueOrigins([
    ...(gatewayCors?.allowOrigins ?? []),
    ...routes.flatMap((route) => route.cors?.allowOrigins ?? []),
    ...edge.csrf.additionalOrigins.map(parseOrigin),
  ]);

  return {
    browser: {
      securityHeaders: gatewayHeaderList(gatewayHeaders),
      strictTransportSecurity:
        hsts === false
          ? undefined
          : [
              `max-age=${seconds(hsts.maxAge)}`,
              hsts.includeSubDomains && 'includeSubDomains',
              hsts.preload && 'preload',
            ]
              .filter(Boolean)
              .join('; '),
      csrf: edge.csrf.enabled ? { trustedOrigins } : undefined,
      compression: edge.compression.enabled
        ? { minLength: edge.compression.minLength, algorithms: [...edge.compression.algorithms] }
        : undefined,
    },
    routes,
  };
}

function corsIR(cors: NonNullable<Edge['cors']>): CorsIR {
  return {
    allowOrigins: origins(cors.allowOrigins),
    allowMethods: [...new Set(cors.allowMethods)],
    allowHeaders: headerNames(cors.allowHeaders),
    exposeHeaders: headerNames(cors.exposeHeaders),
    allowCredentials: cors.allowCredentials,
    maxAgeSeconds: seconds(cors.maxAge),
  };
}

function routeCors(
  gateway: CorsIR | undefined,
  override: RouteInput['cors'],
  at: string,
  errors: FieldError[],
): CorsIR | undefined {
  if (override === false) return undefined;
  if (override === undefined) return gateway;
  if (gateway === undefined) {
    if (override.allowOrigins === undefined) {
      errors.push({
        path: `${at}.allowOrigins`,
        message: 'is required: edge.cors is not set, so this route has no origins to inherit',
      });
      return undefined;
    }
    // Validated already; parsing again only applies edge.cors's defaults to the rest.
    return corsIR(corsSchema.parse(override));
  }
  return {
    allowOrigins: override.allowOrigins === undefined ? gateway.allowOrigins : origins(override.allowOrigins),
    allowMethods: override.allowMethods === undefined ? gateway.allowMethods : [...new Set(override.allowMethods)],
    allowHeaders: override.allowHeaders === undefined ? gateway.allowHeaders : headerNames(override.allowHeaders),
    exposeHeaders: override.exposeHeaders === undefined ? gateway.exposeHeaders : headerNames(override.exposeHeaders),
    allowCredentials: override.allowCredentials ?? gateway.allowCredentials,
    maxAgeSeconds: override.maxAge === undefined ? gateway.maxAgeSeconds : seconds(override.maxAge),
  };
}

function origins(list: readonly string[]): OriginIR[] {
  return uniqueOrigins(list.map(parseOrigin));
}

function headerNames(list: readonly string[]): string[] {
  return [...new Set(list.map((name) => name.toLowerCase()))];
}

/** Header name → value, in the order they are sent; a `false` field is left out. */
function headerMap(input: SecurityHeadersInput | RouteSecurityHeadersInput): Map<string, string | false> {
  const headers = new Map<string, string | false>();
  const csp = input.contentSecurityPolicy;
  if (csp !== undefined) headers.set('content-security-policy', csp === false ? false : cspValue(csp));
  for (const [field, { header }] of Object.entries(simpleSecurityHeaders)) {
    const value = input[field as keyof typeof simpleSecurityHeaders];
    if (value !== undefined) headers.set(header, value);
  }
  return headers;
}

function gatewayHeaderList(headers: Map<string, string | false>): ResponseHeaderIR[] {
  return [...headers].flatMap(([name, value]) => (value === false ? [] : [{ name, value }]));
}

/** Only what differs from the gateway's headers, so an unchanged route carries nothing. */
function headerOverride(
  gateway: Map<string, string | false>,
  route: RouteSecurityHeadersInput,
): HeaderOverrideIR | undefined {
  const set: ResponseHeaderIR[] = [];
  const remove: string[] = [];
  for (const [name, value] of headerMap(route)) {
    if (value === (gateway.get(name) ?? false)) continue;
    if (value === false) remove.push(name);
    else set.push({ name, value });
  }
  return set.length === 0 && remove.length === 0 ? undefined : { set, remove };
}

function cspValue(directives: Record<string, string[]>): string {
  return Object.entries(directives)
    .map(([directive, sources]) => [directive, ...sources].join(' '))
    .join('; ');
}

/** Only called on origins the schema accepted. */
export function parseOrigin(text: string): OriginIR {
  if (!corsOrigin.safeParse(text).success) throw new Error(`unvalidated origin: ${text}`);
  const url = /^(https?):\/\/(\*\.)?([^:]+)(?::(\d+))?$/.exec(text);
  if (!url) throw new Error(`unvalidated origin: ${text}`);
  const [, scheme, star, host = '', port] = url;
  return {
    scheme: scheme === 'https' ? 'https' : 'http',
    anyLabel: star !== undefined,
    host,
    port: port === undefined ? undefined : Number(port),
  };
}

export function originText(origin: OriginIR): string {
  return `${origin.scheme}://${origin.anyLabel ? '*.' : ''}${origin.host}${origin.port === undefined ? '' : `:${origin.port}`}`;
}

function uniqueOrigins(origins: OriginIR[]): OriginIR[] {
  const seen = new Map<string, OriginIR>();
  for (const origin of origins) if (!seen.has(originText(origin))) seen.set(originText(origin), origin);
  return [...seen.values()];
}

/** Durations were validated by the schema. */
function seconds(text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) throw new Error(`unvalidated duration: ${text}`);
  return ms / 1000;
}
