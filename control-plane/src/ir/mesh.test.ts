// The mesh section's checks and what the IR makes of it: SPIFFE ids, default address, callers.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileDefinition } from '../definition/load';

/** A parsed YAML definition, changed by each case. */
type Definition = ReturnType<typeof parse>;

const meshYaml = readFileSync(resolve(import.meta.dirname, '../translate/testdata/in/mesh.yaml'), 'utf8');

function errorsOf(change: (definition: Definition) => void) {
  const definition = parse(meshYaml);
  change(definition);
  const result = compileDefinition(definition);
  return result.ok ? [] : result.errors;
}

describe('the mesh section', () => {
  it('gives every mesh service its SPIFFE id, ports and address', () => {
    const result = compileDefinition(parse(meshYaml));
    if (!result.ok) throw new Error(JSON.stringify(result.errors));
    const mesh = result.ir.mesh;
    expect(mesh?.ingressSpiffeId).toBe('spiffe://salon.example/ns/sekisho-system/sa/ingress');
    const [appointment, customer] = mesh?.services ?? [];
    expect(customer).toMatchObject({
      name: 'customer',
      spiffeId: 'spiffe://salon.example/ns/salon/sa/customer',
      appPort: 3001,
      inboundPort: 15006,
      outboundPort: 15001,
    });
    expect(customer?.cluster).toMatchObject({
      discovery: 'dns',
      endpoints: [{ host: 'customer.salon.svc.cluster.local', port: 15006 }],
      meshPeer: customer?.spiffeId,
    });
    expect(appointment?.spiffeId).toBe('spiffe://salon.example/ns/salon/sa/appointment-api');
    expect(appointment?.cluster).toMatchObject({ discovery: 'eds', endpoints: [{ host: '10.0.0.12', port: 15006 }] });
    expect(appointment?.allow).toEqual([
      {
        principals: ['spiffe://salon.example/ns/salon/sa/customer'],
        callers: ['customer'],
        methods: ['GET'],
        paths: [
          { kind: 'prefix', value: '/appointments/' },
          { kind: 'exact', value: '/health' },
        ],
      },
    ]);
    // booking is not in the mesh: reached as before.
    expect(result.ir.clusters.find((c) => c.name === 'svc_booking')?.meshPeer).toBeUndefined();
  });

  it("gives a mesh service's routes ids of their own service, their permissions and limits", () => {
    const result = compileDefinition(parse(meshYaml));
    if (!result.ok) throw new Error(JSON.stringify(result.errors));
    const [appointment, customer] = result.ir.mesh?.services ?? [];
    expect(customer?.routes).toEqual([]);
    expect(appointment?.routes).toEqual([
      {
        id: 'appointment:all',
        methods: ['GET'],
        path: { kind: 'prefix', value: '/appointments/all/' },
        permissions: ['manage:appointments'],
        limits: [expect.objectContaining({ per: 'ip', requestsPerWindow: 100, windowSeconds: 60 })],
      },
      {
        id: 'appointment:get-appointments-prefix',
        methods: ['GET'],
        path: { kind: 'prefix', value: '/appointments/' },
        permissions: ['read:own_profile'],
        limits: [expect.objectContaining({ per: 'user', requestsPerWindow: 20, windowSeconds: 60 })],
      },
    ]);
  });

  it('defaults the trust domain to cluster.local', () => {
    const definition = parse(meshYaml);
    delete definition.mesh.trustDomain;
    const result = compileDefinition(definition);
    expect(result.ok && result.ir.mesh?.ingressSpiffeId).toBe('spiffe://cluster.local/ns/sekisho-system/sa/ingress');
  });

  it.each([
    [
      'a mesh service that is no service of the definition',
      (d: Definition) => {
        d.mesh.services.billing = { namespace: 'salon', appPort: 3009 };
      },
      [{ path: 'mesh.services.billing', message: 'names no service in services: "billing"' }],
    ],
    [
      'a caller that is neither the ingress nor a mesh service',
      (d: Definition) => {
        d.mesh.services.appointment.allow[0].from = ['customer', 'booking'];
      },
      [
        {
          path: 'mesh.services.appointment.allow[0].from[1]',
          message: 'names neither ingress nor a service of mesh.services: "booking"',
        },
      ],
    ],
    [
      'a service calling itself',
      (d: Definition) => {
        d.mesh.services.customer.allow[0].from = ['customer'];
      },
      [{ path: 'mesh.services.customer.allow[0].from[0]', message: 'a service does not call itself through the mesh' }],
    ],
    [
      'a mesh service with its own upstream TLS',
      (d: Definition) => {
        d.services.customer.tls = { caFile: 'ca.crt', sni: 'customer.internal' };
      },
      [{ path: 'services.customer.tls', message: expect.stringContaining('remove tls') }],
    ],
    [
      'two sidecar ports that are the same',
      (d: Definition) => {
        d.mesh.services.customer.appPort = 15001;
      },
      [{ path: 'mesh.services.customer', message: expect.stringContaining('three different ports') }],
    ],
    [
      'a path with a method in it',
      (d: Definition) => {
        d.mesh.services.appointment.allow[0].paths = ['GET /appointments'];
      },
      [{ path: 'mesh.services.appointment.allow[0].paths[0]', message: expect.stringContaining('"/path"') }],
    ],
    [
      'a path with a star that is not a trailing /*',
      (d: Definition) => {
        d.mesh.services.appointment.allow[0].paths = ['/appointments*'];
      },
      [
        {
          path: 'mesh.services.appointment.allow[0].paths[0]',
          message: '"*" is only allowed as a trailing "/*", got "/appointments*"',
        },
      ],
    ],
    [
      'a misspelt key',
      (d: Definition) => {
        d.mesh.services.customer.alow = [];
      },
      [{ path: 'mesh.services.customer.alow', message: expect.stringContaining('alow') }],
    ],
    [
      'a mesh service name longer than a DNS label',
      (d: Definition) => {
        const long = `s${'x'.repeat(63)}`;
        d.services[long] = { endpoints: ['127.0.0.1:3009'] };
        d.mesh.services[long] = { namespace: 'salon', appPort: 3009 };
      },
      [{ path: `mesh.services.s${'x'.repeat(63)}`, message: expect.stringContaining('63 characters') }],
    ],
    [
      'an address that is not host:port',
      (d: Definition) => {
        d.mesh.services.customer.address = 'customer';
      },
      [{ path: 'mesh.services.customer.address', message: expect.stringContaining('host:port') }],
    ],
    [
      'a mesh route requiring a permission no group grants',
      (d: Definition) => {
        d.mesh.services.appointment.routes[0].require = ['manage:appointments', 'write:everything'];
      },
      [
        {
          path: 'mesh.services.appointment.routes[0].require[1]',
          message: expect.stringContaining('"write:everything" is granted by no group'),
        },
      ],
    ],
    [
      'a mesh route covered by an earlier one',
      (d: Definition) => {
        d.mesh.services.appointment.routes.push({ match: 'GET /appointments/history/*' });
      },
      [
        {
          path: 'mesh.services.appointment.routes[2].match',
          message: expect.stringContaining('routes[1] ("GET /appointments/*") comes first'),
        },
      ],
    ],
    [
      'a mesh route match that is no route match',
      (d: Definition) => {
        d.mesh.services.appointment.routes[0].match = 'FETCH /appointments';
      },
      [{ path: 'mesh.services.appointment.routes[0].match', message: expect.stringContaining('METHOD /path') }],
    ],
    [
      'two windows of one kind on a mesh route',
      (d: Definition) => {
        d.mesh.services.appointment.routes[1].limits.push({ per: 'user', limit: 5, window: '1m' });
      },
      [{ path: 'mesh.services.appointment.routes[1].limits[1].window', message: expect.stringContaining('merge') }],
    ],
  ])('refuses %s, naming the field', (_what, change, expected) => {
    expect(errorsOf(change)).toEqual(expected);
  });

  // One route-list check (ir/route-list.ts) for both lists: a case put in the ingress's routes
  // and in a mesh service's routes gives the same errors, under each list's own path.
  it.each([
    ['a route covered by an earlier one', [{ match: 'GET /x/*' }, { match: 'GET /x/y' }]],
    [
      'two routes with one explicit id',
      [
        { id: 'a', match: 'GET /a' },
        { id: 'a', match: 'GET /b' },
      ],
    ],
    ['a default id taken by an explicit one', [{ id: 'get-b', match: 'GET /a' }, { match: 'GET /b' }]],
    ['a permission no group grants', [{ match: 'GET /a', require: ['read:own_profile', 'write:everything'] }]],
    [
      'two windows of one kind',
      [
        {
          match: 'GET /a',
          limits: [
            { per: 'ip', limit: 5, window: '1m' },
            { per: 'ip', limit: 9, window: '60s' },
          ],
        },
      ],
    ],
  ])('checks %s in a mesh route list as in the ingress route list', (_what, routes) => {
    const ingress = errorsOf((d) => {
      d.routes = routes.map((route) => ({ ...route, to: 'customer' }));
    });
    const mesh = errorsOf((d) => {
      d.mesh.services.appointment.routes = routes;
    });
    expect(ingress).not.toEqual([]);
    const prefix = 'mesh.services.appointment.routes';
    expect(mesh).toEqual(
      ingress.map((error) => ({
        path: error.path.replace(/^routes/, prefix),
        message: error.message.replaceAll(/(^|\s)routes\[/g, `$1${prefix}[`),
      })),
    );
  });
});
