// A synthetic gateway definition of any size for the compile benchmark: `services` services and
// `routes` routes spread over them, with the features a real definition mixes (methods,
// prefixes, templates with an owner check, rewrites, per-route limits, permissions, CORS).
import type { GatewayDefinitionInput } from '@sekisho/control-plane';

const methods = ['GET', 'POST', 'PUT', 'DELETE'] as const;

export function largeDefinition(routeCount: number, serviceCount = 50): GatewayDefinitionInput {
  const services: GatewayDefinitionInput['services'] = {};
  for (let s = 0; s < serviceCount; s += 1) {
    services[`svc-${s}`] = {
      endpoints: [`10.0.${Math.floor(s / 250)}.${(s % 250) + 1}:8080`],
      healthCheck: '/health',
      ...(s % 5 === 0 ? { outlierDetection: { consecutive5xx: 5 } } : {}),
    };
  }
  const routes: GatewayDefinitionInput['routes'] = [];
  for (let r = 0; r < routeCount; r += 1) {
    const service = `svc-${r % serviceCount}`;
    const method = methods[r % methods.length];
    const base = `/api/v1/${service}/resource-${r}`;
    switch (r % 10) {
      case 0:
        routes.push({
          match: `${base}/*`,
          to: service,
          auth: 'none',
          limits: [{ per: 'ip', limit: 10, window: '1m' }],
        });
        break;
      case 1:
        routes.push({
          match: { methods: ['GET'], template: `${base}/customers/{id}` },
          to: service,
          rewrite: '/customers/{id}',
          require: ['read:own'],
          owner: { param: 'id' },
        });
        break;
      case 2:
        routes.push({
          match: `POST ${base}`,
          to: service,
          rewrite: '/items',
          require: ['write:items'],
          limits: [{ per: 'user', limit: 10, window: '1m' }],
          cors: { allowOrigins: ['https://app.example.com'] },
        });
        break;
      default:
        routes.push({ match: `${method} ${base}`, to: service, require: ['read:items'] });
    }
  }
  return {
    listeners: {
      http: { address: '127.0.0.1', port: 8080 },
      // Relative to control-plane/examples (compile with that baseDir).
      https: {
        address: '127.0.0.1',
        port: 8443,
        certificates: [{ certFile: 'dev-tls/localhost.crt', keyFile: 'dev-tls/localhost.key' }],
      },
    },
    identity: {
      firebase: { projectId: 'bench-gateway' },
      groupClaim: 'tier',
      customerId: 'uid',
      groups: { reader: ['read:own', 'read:items'], writer: { inherits: 'reader', adds: ['write:items'] } },
    },
    policyServices: {
      extAuthz: { address: '127.0.0.1:9001', timeout: '500ms' },
      rateLimit: { address: '127.0.0.1:9002', timeout: '100ms', failureMode: 'allow' },
    },
    services,
    limits: {
      authenticated: [{ per: 'user', limit: 300, window: '1m' }],
      unauthenticated: [{ per: 'ip', limit: 60, window: '1m' }],
    },
    routes,
  };
}
