// What the goldens summarise away (the local reply mapping is a hash there): the policy
// filters and their reply format exist only on the inbound listener of a service with routes.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Listener } from '@sekisho/proto/envoy/config/listener/v3/listener';
import { HttpConnectionManager } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileDefinition } from '../../definition/load';
import type { GatewayIR } from '../../ir/types';
import { unpack } from '../any';
import { inboundListener } from './inbound';

const meshYaml = readFileSync(resolve(import.meta.dirname, '../testdata/in/mesh.yaml'), 'utf8');

function inboundOf(ir: GatewayIR, name: string): HttpConnectionManager {
  const service = ir.mesh?.services.find((candidate) => candidate.name === name);
  if (service === undefined) throw new Error(`no mesh service ${name}`);
  const listener = Listener.fromPartial(inboundListener(ir, service));
  const hcm = listener.filterChains[0]?.filters[0]?.typedConfig;
  if (hcm === undefined) throw new Error('no connection manager');
  return unpack(HttpConnectionManager, hcm);
}

describe("a sidecar's inbound listener", () => {
  const result = compileDefinition(parse(meshYaml));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  const { ir } = result;

  it("has RBAC only, and Envoy's own replies, for a service without routes", () => {
    const customer = inboundOf(ir, 'customer');
    expect(customer.httpFilters.map((filter) => filter.name)).toEqual([
      'envoy.filters.http.rbac',
      'envoy.filters.http.router',
    ]);
    expect(customer.localReplyConfig).toBeUndefined();
  });

  it("maps the policy filters' replies to the JSON error format, but not RBAC's 403", () => {
    const appointment = inboundOf(ir, 'appointment');
    const mappers = appointment.localReplyConfig?.mappers ?? [];
    const bodies = mappers.map((mapper) => JSON.stringify(mapper.bodyFormatOverride?.jsonFormat ?? null));
    expect(bodies.some((body) => body.includes('RATE_LIMIT_EXCEEDED'))).toBe(true);
    expect(bodies.some((body) => body.includes('SERVICE_UNAVAILABLE'))).toBe(true);
    const statuses = mappers.flatMap((mapper) => {
      const filters = mapper.filter?.andFilter?.filters ?? (mapper.filter ? [mapper.filter] : []);
      return filters.flatMap((filter) => filter.statusCodeFilter?.comparison?.value?.defaultValue ?? []);
    });
    expect(statuses).not.toContain(403);
  });
});
