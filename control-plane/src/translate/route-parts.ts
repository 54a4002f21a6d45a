// The parts of an Envoy Route that follow from a RouteIR's match and action: path, method,
// header and query matching; forwarding (one cluster or weighted), rewrites, timeouts and
// retries; direct responses and redirects; header changes.
import { type HeaderValueOption, HeaderValueOption_HeaderAppendAction } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  type RateLimit,
  RedirectAction_RedirectResponseCode,
  type RetryPolicy,
  type Route,
  type RouteAction,
  type RouteMatch,
} from '@sekisho/proto/envoy/config/route/v3/route_components';
import { UriTemplateMatchConfig } from '@sekisho/proto/envoy/extensions/path/match/uri_template/v3/uri_template_match';
import { UriTemplateRewriteConfig } from '@sekisho/proto/envoy/extensions/path/rewrite/uri_template/v3/uri_template_rewrite';
import type { StringMatcher } from '@sekisho/proto/envoy/type/matcher/v3/string';
import type {
  DirectResponseIR,
  ForwardIR,
  HeaderChangesIR,
  RedirectIR,
  RetryIR,
  RouteIR,
  ValueMatchIR,
} from '../ir/types';
import { pack } from './any';
import { durationFromMs } from './duration';
import { pathMatchUriTemplateName, pathRewriteUriTemplateName } from './filter-names';

/** What ts-proto's fromPartial accepts (its own DeepPartial is not exported). */
export type DeepPartial<T> = T extends Uint8Array
  ? T
  : T extends Array<infer U>
    ? Array<DeepPartial<U>>
    : T extends object
      ? { [K in keyof T]?: DeepPartial<T[K]> }
      : T;

export function routeMatch(route: RouteIR): DeepPartial<RouteMatch> {
  const methods: DeepPartial<RouteMatch['headers']> =
    route.methods.length === 0
      ? []
      : [
          route.methods.length === 1
            ? { name: ':method', stringMatch: { exact: route.methods[0] } }
            : { name: ':method', stringMatch: { safeRegex: { regex: `^(?:${route.methods.join('|')})$` } } },
        ];
  return {
    ...pathMatch(route.path),
    headers: [
      ...methods,
      ...route.headers.map((header) => ({
        name: header.name,
        ...(header.kind === 'present' ? { presentMatch: true } : { stringMatch: stringMatcher(header) }),
        invertMatch: header.invert,
      })),
    ],
    queryParameters: route.query.map((parameter) => ({
      name: parameter.name,
      ...(parameter.kind === 'present' ? { presentMatch: true } : { stringMatch: stringMatcher(parameter) }),
    })),
  };
}

export function pathMatch(path: RouteIR['path']): DeepPartial<RouteMatch> {
  switch (path.kind) {
    case 'exact':
      return { path: path.value };
    case 'prefix':
      return { prefix: path.value };
    case 'regex':
      return { safeRegex: { regex: path.value } };
    case 'template':
      return {
        pathMatchPolicy: {
          name: pathMatchUriTemplateName,
          typedConfig: pack(UriTemplateMatchConfig, { pathTemplate: path.value }),
        },
      };
  }
}

function stringMatcher(match: ValueMatchIR): DeepPartial<StringMatcher> {
  switch (match.kind) {
    case 'exact':
      return { exact: match.value };
    case 'prefix':
      return { prefix: match.value };
    case 'regex':
      return { safeRegex: { regex: match.value } };
    case 'present':
      throw new Error('a present match has no string matcher');
  }
}

/** The route's action; rate limits only exist on forwarding routes (Envoy's RouteAction). */
export function routeAction(
  route: RouteIR,
  rateLimits: () => DeepPartial<RateLimit>[],
): DeepPartial<
  Pick<Route, 'route' | 'directResponse' | 'redirect' | 'requestHeadersToAdd' | 'requestHeadersToRemove'>
> {
  switch (route.action.kind) {
    case 'forward':
      return forwardingRoute(route.action, rateLimits);
    case 'direct':
      return directResponse(route.action);
    case 'redirect':
      return { redirect: redirect(route.action) };
  }
}

/**
 * A forwarding route: its action, its request-header changes, and the header hygiene of
 * forwarding (the service's own Host, never an absolute-form URL's; Authorization removed
 * after ext_authz has seen it unless the services ask for it).
 */
function forwardingRoute(action: ForwardIR, rateLimits: () => DeepPartial<RateLimit>[]): DeepPartial<Route> {
  const changes = headerChanges(action.requestHeaders, 'request');
  const remove = [...(action.forwardAuthorization ? [] : ['authorization']), ...(changes.requestHeadersToRemove ?? [])];
  return {
    route: { ...forward(action), rateLimits: rateLimits() },
    ...changes,
    ...(remove.length > 0 ? { requestHeadersToRemove: remove } : {}),
  };
}

function forward(action: ForwardIR): DeepPartial<RouteAction> {
  const [only, ...more] = action.clusters;
  return {
    ...(more.length === 0 && only !== undefined
      ? { cluster: only.name, hostRewriteLiteral: only.host }
      : {
          weightedClusters: {
            clusters: action.clusters.map((c) => ({ name: c.name, weight: c.weight, hostRewriteLiteral: c.host })),
          },
        }),
    ...rewrite(action.rewrite),
    timeout: durationFromMs(action.timeoutMs),
    ...(action.idleTimeoutMs === undefined ? {} : { idleTimeout: durationFromMs(action.idleTimeoutMs) }),
    retryPolicy: retryPolicy(action.retries),
    hashPolicy:
      action.hashOn === undefined
        ? []
        : [
            action.hashOn === 'sourceIp'
              ? { connectionProperties: { sourceIp: true } }
              : { header: { headerName: action.hashOn.header } },
          ],
  };
}

/** Envoy's retry policy of a route (the ingress's, and a sidecar's outbound routes). */
export function retryPolicy(retries: RetryIR): DeepPartial<RetryPolicy> {
  return {
    retryOn: retries.on.join(','),
    numRetries: retries.count,
    retriableStatusCodes: retries.statusCodes,
    ...(retries.perTryTimeoutMs === undefined ? {} : { perTryTimeout: durationFromMs(retries.perTryTimeoutMs) }),
    ...(retries.perTryIdleTimeoutMs === undefined
      ? {}
      : { perTryIdleTimeout: durationFromMs(retries.perTryIdleTimeoutMs) }),
    retryBackOff: {
      baseInterval: durationFromMs(retries.backOff.baseMs),
      ...(retries.backOff.maxMs === undefined ? {} : { maxInterval: durationFromMs(retries.backOff.maxMs) }),
    },
  };
}

function rewrite(value: ForwardIR['rewrite']): DeepPartial<RouteAction> {
  if (value === undefined) return {};
  switch (value.kind) {
    case 'prefix':
      return { prefixRewrite: value.value };
    case 'regex':
      return { regexRewrite: { pattern: { regex: value.regex }, substitution: value.substitution } };
    case 'template':
      return {
        pathRewritePolicy: {
          name: pathRewriteUriTemplateName,
          typedConfig: pack(UriTemplateRewriteConfig, { pathTemplateRewrite: value.value }),
        },
      };
  }
}

/** Its Content-Type is among the route's response headers (see ir/routes.ts). */
function directResponse(action: DirectResponseIR): DeepPartial<Route> {
  return {
    directResponse: {
      status: action.status,
      ...(action.body === undefined ? {} : { body: { inlineString: action.body } }),
    },
  };
}

const redirectCodes = {
  301: RedirectAction_RedirectResponseCode.MOVED_PERMANENTLY,
  302: RedirectAction_RedirectResponseCode.FOUND,
  303: RedirectAction_RedirectResponseCode.SEE_OTHER,
  307: RedirectAction_RedirectResponseCode.TEMPORARY_REDIRECT,
  308: RedirectAction_RedirectResponseCode.PERMANENT_REDIRECT,
} as const;

function redirect(action: RedirectIR): DeepPartial<Route['redirect']> {
  return {
    ...(action.scheme === undefined ? {} : { schemeRedirect: action.scheme }),
    ...(action.host === undefined ? {} : { hostRedirect: action.host }),
    ...(action.port === undefined ? {} : { portRedirect: action.port }),
    ...(action.path === undefined ? {} : { pathRedirect: action.path }),
    ...(action.prefixRewrite === undefined ? {} : { prefixRewrite: action.prefixRewrite }),
    responseCode: redirectCodes[action.status],
    stripQuery: action.stripQuery,
  };
}

/** Request or response header changes of a route, as Envoy's *_headers_to_add/remove. */
export function headerChanges(changes: HeaderChangesIR, side: 'request' | 'response'): DeepPartial<Route> {
  const add = [
    ...changes.add.map((h) => header(h.name, h.value, HeaderValueOption_HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD)),
    ...changes.set.map((h) => header(h.name, h.value, HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)),
  ];
  if (add.length === 0 && changes.remove.length === 0) return {};
  return side === 'request'
    ? { requestHeadersToAdd: add, requestHeadersToRemove: changes.remove }
    : { responseHeadersToAdd: add, responseHeadersToRemove: changes.remove };
}

function header(
  key: string,
  value: string,
  appendAction: HeaderValueOption_HeaderAppendAction,
): DeepPartial<HeaderValueOption> {
  return { header: { key, value }, appendAction };
}
