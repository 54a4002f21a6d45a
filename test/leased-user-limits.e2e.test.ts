import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// Leased quota through a real Envoy (perUserLimits: ext-authz, EXT_AUTHZ_LIMITS_LEASE at its
// default of 1 %): a busy user's per-user limit is counted in Redis a lease at a time by each
// of two ext-authz replicas, never letting more than the limit through, refusing at most the
// replicas' unspent leases early, with far fewer Redis calls than requests.

let stack: Stack;
let dir: string;

/** limits.authenticated, per user per minute: leases of 4 at 1 %. */
const userLimit = 400;
const lease = 4;

beforeAll(async () => {
  const [gateway, customer, extAuthzA, extAuthzB, rateLimit] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  dir = await mkdtemp(join(tmpdir(), 'sekisho-leased-limits-'));
  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(
    definitionFile,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: gateway } },
      identity: {
        firebase: { projectId: 'demo-sekisho-leased-limits' },
        groupClaim: 'tier',
        groups: { member: ['read:own_profile'] },
      },
      policyServices: {
        extAuthz: { addresses: [`127.0.0.1:${extAuthzA}`, `127.0.0.1:${extAuthzB}`], timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', perUserLimits: 'ext-authz' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`] } },
      limits: { authenticated: [{ per: 'user', limit: userLimit, window: '1m' }] },
      routes: [{ id: 'profile', match: 'GET /api/v1/profile', to: 'customer', require: ['read:own_profile'] }],
    }),
  );
  stack = await startStack({ definitionFile });
});

afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A metric's sum over its series whose line contains `filter`, over every ext-authz replica. */
async function metric(name: string, filter = ''): Promise<number> {
  let sum = 0;
  for (const url of stack.extAuthzAdminUrls) {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const line of text.split('\n')) {
      if (line.startsWith(name) && line.includes(filter)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

const profile = async (token: string) => {
  const response = await fetch(`${stack.gatewayUrl}/api/v1/profile`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5000),
  });
  return { status: response.status, text: await response.text() };
};

describe('leased quota for the per-user limits in ext-authz', () => {
  it('lets a busy user at most the limit through two replicas, in far fewer Redis calls than requests', async () => {
    showStackLogsOnFailure(() => stack, 60);
    // Both replicas in Envoy's rotation first (one user of its own: its count is apart).
    const warmUp = await stack.mintToken('warm-up', { group: 'member' });
    const checks = () =>
      Promise.all(
        stack.extAuthzAdminUrls.map(async (url) => {
          const text = await (await fetch(`${url}/metrics`)).text();
          return text.split('\n').filter((line) => line.startsWith('sekisho_ext_authz_checks_total')).length;
        }),
      );
    for (let i = 0; (await checks()).some((count) => count === 0); i++) {
      if (i > 100) throw new Error('the second ext-authz replica never answered a Check');
      await profile(warmUp);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const scriptCallsBefore = await metric('sekisho_ratelimit_redis_batch_size_count');

    const token = await stack.mintToken('busy-user', { group: 'member' });
    const statuses: number[] = [];
    let refusal = '';
    for (let i = 0; i < userLimit + 50; i++) {
      const answer = await profile(token);
      statuses.push(answer.status);
      if (answer.status === 429) refusal = answer.text;
    }
    const allowed = statuses.filter((s) => s === 200).length;
    // Never past the limit; at most each replica's unspent lease refused early.
    expect(allowed).toBeLessThanOrEqual(userLimit);
    expect(allowed).toBeGreaterThanOrEqual(userLimit - 2 * lease);
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    expect(JSON.parse(refusal)).toMatchObject({ success: false, error: { code: 'RATE_LIMIT_EXCEEDED' } });

    // Leases, not a Redis call per request: a lease of 4 is asked for every 2 requests at most.
    expect(await metric('sekisho_ext_authz_limit_leases_total', 'granted="true"')).toBeGreaterThan(0);
    const scriptCalls = (await metric('sekisho_ratelimit_redis_batch_size_count')) - scriptCallsBefore;
    expect(scriptCalls).toBeLessThan(statuses.length * 0.75);
  });
});
