// The short names of the served resource types (cluster, route, ...), as in the metrics' `type` label.
import { pushOrder, typeUrls } from '../xds/type-urls';

const names = new Map<string, string>(Object.entries(typeUrls).map(([name, url]) => [url, name]));

export function typeName(typeUrl: string): string {
  return names.get(typeUrl) ?? typeUrl;
}

/** In push order: cluster, endpoint, secret, listener, route, authzPolicy, rateLimitPolicy. */
export const typeNames: readonly string[] = pushOrder.map(typeName);
