// The salon gateway of the reference design (api-gateway-security-design.ja.md).
// Same content as salon.gateway.yaml (a test keeps the two equal); `npm start` runs this one.
import { defineGateway } from '@sekisho/control-plane';

export default defineGateway({
  listeners: {
    // Plain HTTP answers 308 to HTTPS (on by default with an https listener).
    http: { address: '127.0.0.1', port: 8080 },
    // The development certificate (signed by dev-tls/ca.crt, for localhost, 127.0.0.1, ::1):
    // `curl --cacert control-plane/examples/dev-tls/ca.crt https://localhost:8443/...`.
    https: {
      address: '127.0.0.1',
      port: 8443,
      certificates: [{ certFile: 'dev-tls/localhost.crt', keyFile: 'dev-tls/localhost.key' }],
    },
  },
  identity: {
    firebase: { projectId: 'demo-salon' },
    groupClaim: 'tier',
    defaultGroup: 'basic_customer',
    // reference §3.3
    groups: {
      basic_customer: [
        'read:own_profile',
        'read:own_appointments',
        'read:own_history',
        'read:own_messages',
        'read:own_points',
      ],
      verified_customer: {
        inherits: 'basic_customer',
        adds: ['update:own_profile', 'create:appointments', 'update:own_appointments', 'send:messages'],
      },
      premium_customer: {
        inherits: 'verified_customer',
        adds: ['cancel:own_appointments', 'read:own_photos', 'redeem:rewards'],
      },
    },
  },
  policyServices: {
    extAuthz: { address: '127.0.0.1:9001', timeout: '500ms' },
    // redisFailureMode local: limits and the auth routes' blocks hold while Redis is down.
    // perUserLimits ext-authz: the per-user limits counted in ext-authz's Check (one gRPC call, not two).
    rateLimit: {
      address: '127.0.0.1:9002',
      timeout: '100ms',
      failureMode: 'allow',
      redisFailureMode: 'local',
      perUserLimits: 'ext-authz',
    },
    // Receives Envoy's access log for threat detection (threat-detector/README.md).
    threatDetector: { address: '127.0.0.1:9003' },
  },
  services: {
    customer: { endpoints: ['127.0.0.1:3001'], healthCheck: '/health' },
    appointment: {
      endpoints: ['127.0.0.1:3002'],
      healthCheck: '/health',
      // reference §4.2: the appointment circuit breaker (failure threshold 3, recovery 30 s) is
      // Envoy's outlier detection: 3 consecutive 5xx eject an endpoint for 30 s.
      outlierDetection: { consecutive5xx: 3, baseEjectionTime: '30s' },
      circuitBreakers: { maxPendingRequests: 256, maxRequests: 1024 },
    },
    notification: { endpoints: ['127.0.0.1:3003'], healthCheck: '/health' },
  },
  // reference §4.1
  limits: {
    authenticated: [
      { per: 'user', limit: 300, window: '1m' },
      { per: 'user', limit: 1000, window: '1h' },
    ],
    unauthenticated: [
      { per: 'ip', limit: 60, window: '1m' },
      { per: 'ip', limit: 200, window: '1h' },
    ],
  },
  routes: [
    // customer service
    { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
    { match: 'PUT /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['update:own_profile'] },
    { match: 'GET /api/v1/customer/history', to: 'customer', rewrite: '/history', require: ['read:own_history'] },
    { match: 'GET /api/v1/customer/photos', to: 'customer', rewrite: '/photos', require: ['read:own_photos'] },
    { match: 'GET /api/v1/customer/points', to: 'customer', rewrite: '/points', require: ['read:own_points'] },
    { match: 'POST /api/v1/rewards/redeem', to: 'customer', rewrite: '/rewards/redeem', require: ['redeem:rewards'] },
    // appointment service
    {
      match: 'GET /api/v1/appointments',
      to: 'appointment',
      rewrite: '/appointments',
      require: ['read:own_appointments'],
    },
    {
      match: 'POST /api/v1/appointments',
      to: 'appointment',
      rewrite: '/appointments',
      require: ['create:appointments'],
      limits: [{ per: 'user', limit: 10, window: '1m' }],
    },
    {
      match: 'GET /api/v1/appointments/*',
      to: 'appointment',
      rewrite: '/appointments/',
      require: ['read:own_appointments'],
    },
    {
      match: 'PUT /api/v1/appointments/*',
      to: 'appointment',
      rewrite: '/appointments/',
      require: ['update:own_appointments'],
    },
    {
      match: 'DELETE /api/v1/appointments/*',
      to: 'appointment',
      rewrite: '/appointments/',
      require: ['cancel:own_appointments'],
    },
    // notification service
    { match: 'GET /api/v1/messages', to: 'notification', rewrite: '/messages', require: ['read:own_messages'] },
    {
      match: 'POST /api/v1/messages',
      to: 'notification',
      rewrite: '/messages',
      require: ['send:messages'],
      limits: [{ per: 'user', limit: 30, window: '1m' }],
      maxRequestBodyBytes: 65_536, // a message is text; the gateway-wide default is 1 MiB
    },
    // sign-in and token refresh: no caller identity yet, brute-force protection per IP
    {
      match: '/api/v1/auth/*',
      to: 'customer',
      auth: 'none',
      limits: [{ per: 'ip', limit: 5, window: '1m', blockFor: '15m' }],
    },
  ],
  // reference §5.2, its values spelled out (they are also the defaults): the sign-in routes'
  // own 401/403 count as failed logins next to ext-authz's refused tokens.
  threats: {
    loginRoutes: ['api-v1-auth-prefix'],
    bruteForce: { failures: 5, within: '15m', blockIpFor: '1h' },
    suspiciousUsage: { calls: 1000, within: '1h', limit: 10, per: '1m', for: '30m' },
    dataExfiltration: { megabytes: 100, within: '1h', blockUserFor: '30m' },
  },
  edge: {
    // The salon's PWA (and its dev server) may call the API from a browser. Security headers,
    // CSRF and compression are on by default.
    cors: { allowOrigins: ['https://app.example', 'http://localhost:5173'] },
    // In production the gateway sits behind Cloudflare: only its ranges may tell the client's
    // address (X-Forwarded-For) and country (CF-IPCountry); high-risk countries are refused.
    trustedProxies: 'cloudflare',
    geoBlock: ['CN', 'RU'],
  },
});
