// CSRF in Envoy's CSRF filter: a POST, PUT, PATCH or DELETE whose Origin (or, without one,
// Referer) is neither the request's own host nor a trusted origin is refused with 403.

import { ExtensionWithMatcher } from '@sekisho/proto/envoy/extensions/common/matching/v3/extension_matcher';
import { SkipFilter } from '@sekisho/proto/envoy/extensions/filters/common/matcher/action/v3/skip_action';
import { CsrfPolicy } from '@sekisho/proto/envoy/extensions/filters/http/csrf/v3/csrf';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { HttpRequestHeaderMatchInput } from '@sekisho/proto/envoy/type/matcher/v3/http_inputs';
import type { Matcher_MatcherList_Predicate } from '@sekisho/proto/xds/type/matcher/v3/matcher';
import type { CsrfIR } from '../ir/types';
import { pack } from './any';
import { celFilter } from './cel';
import { hostMatcher } from './cors';
import { httpFilterNames } from './filter-names';

/**
 * Envoy's CSRF filter also refuses a request with neither Origin nor Referer. Browsers send
 * Origin on every POST, PUT, PATCH and DELETE (`null` when they hide it, which is refused), so
 * such a request comes from a mobile app, a server or curl, which authenticate with a bearer
 * token that no other site can make a browser send: the filter is skipped for them.
 */
export function csrfFilter(csrf: CsrfIR): HttpFilter {
  const policy = CsrfPolicy.fromPartial({
    filterEnabled: { defaultValue: { numerator: 100 } },
    additionalOrigins: csrf.trustedOrigins.map(hostMatcher),
  });
  return HttpFilter.fromPartial({
    name: httpFilterNames.csrf,
    typedConfig: pack(
      ExtensionWithMatcher,
      ExtensionWithMatcher.fromPartial({
        extensionConfig: { name: httpFilterNames.csrf, typedConfig: pack(CsrfPolicy, policy) },
        xdsMatcher: {
          matcherList: {
            matchers: [
              {
                predicate: { andMatcher: { predicate: [headerAbsent('origin'), headerAbsent('referer')] } },
                onMatch: {
                  action: { name: 'sekisho.skip_csrf', typedConfig: pack(SkipFilter, SkipFilter.fromPartial({})) },
                },
              },
            ],
          },
        },
      }),
    ),
  });
}

function headerAbsent(header: string): Matcher_MatcherList_Predicate {
  return {
    notMatcher: {
      singlePredicate: {
        input: {
          name: `sekisho.header.${header}`,
          typedConfig: pack(
            HttpRequestHeaderMatchInput,
            HttpRequestHeaderMatchInput.fromPartial({ headerName: header }),
          ),
        },
        // Any value, even empty: the predicate is false only when the header is missing.
        valueMatch: { safeRegex: { googleRe2: {}, regex: '[\\s\\S]*' }, ignoreCase: false },
      },
    },
  };
}

/** The CSRF filter's own refusals, told apart from every other 403 by their response details. */
export const csrfRefused = celFilter("response.code_details == 'csrf_origin_mismatch'");
