import { validateEnvoyConfig } from '@sekisho/devstack/envoy';
import { generateSigningKey } from '@sekisho/devstack/firebase-keys';
import { exportJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { baselineBootstrap } from './gateway-envoy';

// The baselines' bootstrap is generated; the real Envoy 1.40 checks it (--mode validate).
describe('the bench:gateway baseline bootstrap', () => {
  it('is a configuration Envoy accepts, with both listeners', async () => {
    const key = await generateSigningKey();
    const jwk = { ...(await exportJWK(key.publicKey)), kid: key.kid, alg: 'RS256', use: 'sig' };
    const bootstrap = baselineBootstrap({
      adminPort: 0,
      envoyOnlyPort: 10001,
      envoyNativePort: 10002,
      upstreamPort: 10003,
      path: '/api/v1/customer/profile',
      rewrite: '/profile',
      projectId: 'p',
      jwks: JSON.stringify({ keys: [jwk] }),
      groupClaim: 'tier',
      group: 'basic_customer',
    });
    const result = await validateEnvoyConfig(bootstrap);
    expect(result.output).not.toMatch(/error/i);
    expect(result.ok).toBe(true);
    expect(JSON.parse(bootstrap).static_resources.listeners.map((l: { name: string }) => l.name)).toEqual([
      'envoy_only',
      'envoy_native',
    ]);
  }, 60_000);
});
