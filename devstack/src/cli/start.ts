// `npm start`: runs the whole gateway locally from the example definition and
// prints where to call it and ready-to-use development tokens. Ctrl-C stops all.
import { resolve } from 'node:path';
import { loadOrCreateDevKey } from '../firebase-keys';
import { repoRoot } from '../paths';
import { startStack } from '../stack';

const definitionFile = resolve(repoRoot, process.env.SEKISHO_DEFINITION ?? 'control-plane/examples/salon.gateway.ts');
const fixedPort = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const signingKey = await loadOrCreateDevKey();
console.log(`Sekisho: starting the local gateway from ${definitionFile}`);
const stack = await startStack({
  definitionFile,
  signingKey,
  ports: {
    controlPlaneXds: fixedPort('CONTROL_PLANE_XDS_PORT', 18000),
    controlPlaneAdmin: fixedPort('CONTROL_PLANE_ADMIN_PORT', 18001),
    extAuthzAdmin: fixedPort('EXT_AUTHZ_ADMIN_PORT', 9101),
    ratelimitAdmin: fixedPort('RATELIMIT_ADMIN_PORT', 9102),
    envoyAdmin: fixedPort('ENVOY_ADMIN_PORT', 9901),
    keyServer: fixedPort('DEV_KEY_SERVER_PORT', 9099),
  },
  logLevel: process.env.LOG_LEVEL ?? 'warn',
  progress: (line) => console.log(`  … ${line}`),
}).catch((error: unknown) => {
  console.error(`Sekisho failed to start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});

const groups = Object.keys(stack.definition.identity.groups);
const tokens = await Promise.all(
  groups.map(async (group) => ({
    group,
    uid: `dev-${group}`,
    token: await stack.mintToken(`dev-${group}`, { group, email: `${group}@example.com`, emailVerified: true }),
  })),
);
const line = '─'.repeat(72);
console.log(`
${line}
Sekisho is running.

  Gateway:            ${stack.gatewayUrl}
  Envoy admin:        ${stack.envoyAdminUrl}
  Control plane:      ${stack.controlPlaneAdminUrl}/status
  ext-authz:          ${stack.extAuthzAdminUrl}/status
  rate-limit service: ${stack.ratelimitAdminUrl}/status
  Redis:              ${stack.redis.url} (${stack.redis.source})
  Definition:         ${definitionFile} (edit it: changes are applied live)

Development ID tokens (valid for one hour; signed by the local key server):
${tokens.map((t) => `\n  ${t.group} (uid ${t.uid}):\n  ${t.token}`).join('\n')}

Try:
  curl -i ${stack.gatewayUrl}/api/v1/customer/profile
  curl -i -H "Authorization: Bearer <token>" ${stack.gatewayUrl}/api/v1/customer/profile

More tokens: npm run mint-token -- --uid alice --group premium_customer

Press Ctrl-C to stop everything.
${line}`);

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  console.log('\nSekisho: stopping…');
  await stack.stop();
  console.log('Sekisho: stopped.');
  process.exit(0);
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
