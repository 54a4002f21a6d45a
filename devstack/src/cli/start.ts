// `npm start`: runs the whole gateway locally from the example definition and
// prints where to call it and ready-to-use development tokens. Ctrl-C stops all
// (a second Ctrl-C stops at once).
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { ConfigError, envEnum, envPort, loadConfig } from '@sekisho/service-kit/config';
import { z } from 'zod';
import { loadOrCreateDevKey } from '../firebase-keys';
import { devCertificateAuthorityFile, devDefinitionFile, localStackFile } from '../paths';
import { startStack } from '../stack';

// Fixed ports, so URLs and tokens stay valid across restarts; 0 = any free port.
const schema = z.object({
  CONTROL_PLANE_XDS_PORT: envPort(18000),
  CONTROL_PLANE_ADMIN_PORT: envPort(18001),
  EXT_AUTHZ_ADMIN_PORT: envPort(9101),
  RATELIMIT_ADMIN_PORT: envPort(9102),
  THREAT_ADMIN_PORT: envPort(9103),
  ENVOY_ADMIN_PORT: envPort(9901),
  DEV_KEY_SERVER_PORT: envPort(9099),
  /** Also run the Firebase Auth emulator, and let ext-authz accept its unsigned tokens. */
  SEKISHO_AUTH_EMULATOR: envEnum(['true', 'false'], 'false').transform((value) => value === 'true'),
  AUTH_EMULATOR_PORT: envPort(9199),
  LOG_LEVEL: envEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'warn'),
  /** The ingress Envoy's xDS variant: GRPC (state of the world) or DELTA_GRPC. */
  SEKISHO_ADS_API_TYPE: envEnum(['GRPC', 'DELTA_GRPC'], 'GRPC'),
});

let config: z.output<typeof schema>;
try {
  config = loadConfig(schema);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`Sekisho: ${error.message}`);
  process.exit(2);
}

const definitionFile = devDefinitionFile();
const signingKey = await loadOrCreateDevKey();
console.log(`Sekisho: starting the local gateway from ${definitionFile}`);
const stack = await startStack({
  definitionFile,
  signingKey,
  ports: {
    controlPlaneXds: config.CONTROL_PLANE_XDS_PORT,
    controlPlaneAdmin: config.CONTROL_PLANE_ADMIN_PORT,
    extAuthzAdmin: config.EXT_AUTHZ_ADMIN_PORT,
    ratelimitAdmin: config.RATELIMIT_ADMIN_PORT,
    threatDetectorAdmin: config.THREAT_ADMIN_PORT,
    envoyAdmin: config.ENVOY_ADMIN_PORT,
    keyServer: config.DEV_KEY_SERVER_PORT,
    authEmulator: config.AUTH_EMULATOR_PORT,
  },
  authEmulator: config.SEKISHO_AUTH_EMULATOR,
  logLevel: config.LOG_LEVEL,
  adsApiType: config.SEKISHO_ADS_API_TYPE,
  // What production runs: the bundles `npm run build` (npm start's pre-step) wrote to dist/.
  runtime: 'dist',
  progress: (line) => console.log(`  … ${line}`),
}).catch((error: unknown) => {
  console.error(`Sekisho failed to start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});

// Where `npm run admin` finds this stack's Redis; removed when the stack stops.
const stackFile = localStackFile();
mkdirSync(dirname(stackFile), { recursive: true });
writeFileSync(
  stackFile,
  `${JSON.stringify({
    pid: process.pid,
    redisUrl: stack.redis.url,
    // The claims `npm run admin` sets in Firebase when it is configured.
    groupClaim: stack.definition.identity.groupClaim,
    ...(typeof stack.definition.identity.customerId === 'object'
      ? { customerIdClaim: stack.definition.identity.customerId.claim }
      : {}),
    projectId: stack.definition.identity.firebase.projectId,
    // `npm run admin` also changes the emulator's users then.
    ...(stack.authEmulator ? { authEmulatorHost: stack.authEmulator.host } : {}),
    startedAt: new Date().toISOString(),
  })}\n`,
);
process.on('exit', () => rmSync(stackFile, { force: true }));

const groups = Object.keys(stack.definition.identity.groups);
const tokens = await Promise.all(
  groups.map(async (group) => ({
    group,
    uid: `dev-${group}`,
    token: await stack.mintToken(`dev-${group}`, { group, email: `${group}@example.com`, emailVerified: true }),
  })),
);
/**
 * `--cacert <file>` when the served certificate was signed by the development CA, so the
 * printed commands work as printed; else a placeholder for the CA of the certificate in use.
 */
function caOption(): string {
  const certificate = stack.definition.listeners.https?.certificates[0];
  if (!certificate) return '';
  try {
    const served = new X509Certificate(readFileSync(resolve(dirname(definitionFile), certificate.certFile)));
    const ca = new X509Certificate(readFileSync(devCertificateAuthorityFile));
    if (served.verify(ca.publicKey)) return `--cacert ${relative(process.cwd(), devCertificateAuthorityFile)} `;
  } catch {
    // Unreadable: the control plane would have refused it; fall through to the placeholder.
  }
  return '--cacert <the CA of your certificate> ';
}
const cacert = caOption();
const redirecting = stack.httpsUrl !== undefined && stack.definition.listeners.http.redirectToHttps !== false;
const httpLine = stack.httpsUrl
  ? `  HTTP:               ${stack.httpUrl} (${redirecting ? 'answers 308 Permanent Redirect to HTTPS' : 'plain HTTP'})\n`
  : '';
const tryLines = [
  `  curl -i ${cacert}${stack.gatewayUrl}/api/v1/customer/profile`,
  `  curl -i ${cacert}-H "Authorization: Bearer <token>" ${stack.gatewayUrl}/api/v1/customer/profile`,
  ...(redirecting ? [`  curl -i ${stack.httpUrl}/api/v1/customer/profile      # 308 to HTTPS`] : []),
].join('\n');
const emulator = stack.authEmulator;
const emulatorLines = emulator
  ? `
Firebase Auth emulator: ${emulator.url} (project ${emulator.projectId})
  ext-authz accepts its unsigned ID tokens (development only). Point the app's Firebase SDK at
  it (connectAuthEmulator), or sign up and in with its REST API:
  curl -s -H 'content-type: application/json' -d '{"email":"hana@example.com","password":"secret-123","returnSecureToken":true}' \\
    '${emulator.url}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=any'     # then accounts:signInWithPassword
  The "idToken" of the answer is a Bearer token for the gateway; npm run admin changes the emulator's users too.
`
  : '';
const line = '─'.repeat(72);
console.log(`
${line}
Sekisho is running.

  Gateway:            ${stack.gatewayUrl}
${httpLine}  Envoy admin:        ${stack.envoyAdminUrl}
  Control plane:      ${stack.controlPlaneAdminUrl}/status
  Control channel:    ${stack.controlChannel ? `mutual TLS on port ${stack.xdsPort} (CA and certificates for this run: ${stack.controlChannel.dir})` : `plaintext on loopback, port ${stack.xdsPort}`}
  ext-authz:          ${stack.extAuthzAdminUrl}/status
  rate-limit service: ${stack.ratelimitAdminUrl}/status
${
  stack.threatDetectorAdminUrl
    ? `  threat detector:    ${stack.threatDetectorAdminUrl}/status (blocks: npm run admin -- unblock-ip|unblock-user)
`
    : ''
}  Redis:              ${stack.redis.url} (${stack.redis.source})
  Definition:         ${definitionFile} (edit it: changes are applied live)

Development ID tokens (valid for one hour; signed by the local key server):
${tokens.map((t) => `\n  ${t.group} (uid ${t.uid}):\n  ${t.token}`).join('\n')}
${emulatorLines}
Try:
${tryLines}

More tokens: npm run mint-token -- --uid alice --group premium_customer
Accounts:    npm run admin -- revoke|disable|enable|set-group|set-customer-id <uid> [value]

Press Ctrl-C to stop everything.
${line}`);

let stoppingSince: number | undefined;
const shutdown = async () => {
  if (stoppingSince !== undefined) {
    // One Ctrl-C can arrive twice: from the terminal to the whole process group, and
    // relayed by tsx to this process. Only a later, deliberate second one means "now".
    if (Date.now() - stoppingSince < 1_500) return;
    // The supervisor's exit hook and watchdogs SIGKILL whatever is still running.
    console.error('\nSekisho: stopping at once.');
    process.exit(1);
  }
  stoppingSince = Date.now();
  console.log('\nSekisho: stopping… (Ctrl-C again to stop at once)');
  try {
    await stack.stop();
    console.log('Sekisho: stopped.');
    process.exit(0);
  } catch (error) {
    console.error(`Sekisho: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }
};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, shutdown);
