// A TypeScript definition with a route to a service that does not exist (routes[1].to).
import { defineGateway } from '@sekisho/control-plane';

export default defineGateway({
  listeners: { http: { port: 8080 } },
  identity: { firebase: { projectId: 'demo-minimal' }, groupClaim: 'tier', groups: { member: ['read:own_profile'] } },
  policyServices: { extAuthz: { address: '127.0.0.1:9001' }, rateLimit: { address: '127.0.0.1:9002' } },
  services: { customer: { endpoints: ['127.0.0.1:3001'] } },
  routes: [
    { match: 'GET /api/v1/customer/profile', to: 'customer', require: ['read:own_profile'] },
    { match: 'GET /api/v1/customer/points', to: 'points', require: ['read:own_profile'] },
  ],
});
