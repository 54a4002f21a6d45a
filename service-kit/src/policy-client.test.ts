import { PermissionSet } from '@sekisho/proto/sekisho/policy/v1/policy';
import { afterEach, describe, expect, it } from 'vitest';
import type { GrpcServer } from './grpc-server';
import { createLogger } from './logger';
import { type PolicySubscription, type PolicySubscriptionOptions, subscribePolicy } from './policy-client';
import { startPolicyServer } from './testing/policy-server';

// A tiny real ADS server: records every request and lets the test push responses.
// PermissionSet stands in for a policy message (any message works on the wire).
const typeUrl = 'type.googleapis.com/sekisho.policy.v1.PermissionSet';

/** The shared test ADS server, pushing PermissionSets (or bytes that decode to nothing). */
async function fakeControlPlane(port = 0) {
  const ads = await startPolicyServer(port);
  const push = (version: string, permissions: string[] | 'garbage', type = typeUrl) =>
    ads.push(
      type,
      version,
      permissions === 'garbage' ? Buffer.from([0xff, 0xff, 0xff]) : PermissionSet.encode({ permissions }).finish(),
    );
  return { server: ads.server, requests: ads.requests, push };
}

async function until<T>(probe: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A subscription to the PermissionSet stand-in at `port`, with quiet logs. */
function subscribe(
  port: number,
  overrides: Partial<PolicySubscriptionOptions<PermissionSet>> = {},
): PolicySubscription<PermissionSet> {
  return subscribePolicy({
    address: `127.0.0.1:${port}`,
    nodeId: 'ext-authz-test',
    typeUrl,
    resourceName: 'authz',
    decode: (bytes) => PermissionSet.decode(bytes),
    apply: () => {},
    logger: createLogger('test', { level: 'silent' }),
    ...overrides,
  });
}

describe('subscribePolicy (real gRPC ADS stream)', () => {
  let server: GrpcServer | undefined;
  let subscription: PolicySubscription | undefined;
  afterEach(async () => {
    subscription?.close();
    await server?.close(100);
  });

  it('subscribes with its node, applies a policy and ACKs it; a rejected one is NACKed and the old one kept', async () => {
    const cp = await fakeControlPlane();
    server = cp.server;
    const applied: string[][] = [];
    subscription = subscribe(cp.server.port, {
      apply: (policy) => {
        if (policy.permissions.includes('bad')) throw new Error('permission "bad" is not allowed');
        applied.push(policy.permissions);
      },
    });
    const first = await until(() => cp.requests[0]);
    expect(first.node?.id).toBe('ext-authz-test');
    expect(first.typeUrl).toBe(typeUrl);
    expect(first.resourceNames).toEqual(['authz']);

    const nonce1 = cp.push('v1', ['read:own_profile']);
    const ack = await until(() => cp.requests.find((r) => r.responseNonce === nonce1));
    expect(ack.versionInfo).toBe('v1');
    expect(ack.errorDetail).toBeUndefined();
    expect(subscription.current()?.version).toBe('v1');

    const nonce2 = cp.push('v2', ['bad']);
    const nack = await until(() => cp.requests.find((r) => r.responseNonce === nonce2));
    expect(nack.errorDetail?.message).toContain('"bad" is not allowed');
    expect(nack.versionInfo).toBe('v1');

    const nonce3 = cp.push('v3', 'garbage');
    const nack3 = await until(() => cp.requests.find((r) => r.responseNonce === nonce3));
    expect(nack3.errorDetail).toBeDefined();
    expect(subscription.current()).toMatchObject({ version: 'v1', policy: { permissions: ['read:own_profile'] } });
    expect(applied).toEqual([['read:own_profile']]);
  });

  it('answers only responses of its own type, each with its nonce', async () => {
    const cp = await fakeControlPlane();
    server = cp.server;
    subscription = subscribe(cp.server.port);
    await until(() => cp.requests[0]);
    const foreign = cp.push('x1', ['a'], 'type.googleapis.com/envoy.config.cluster.v3.Cluster');
    const own = cp.push('v1', ['a']);
    await until(() => cp.requests.find((r) => r.responseNonce === own));
    expect(cp.requests.map((r) => r.responseNonce)).toEqual(['', own]);
    expect(cp.requests.some((r) => r.responseNonce === foreign)).toBe(false);
  });

  it('stops for good on close(): no reconnect, no further request', async () => {
    const cp = await fakeControlPlane();
    server = cp.server;
    const sub = subscribe(cp.server.port, { minBackoffMs: 10, maxBackoffMs: 20 });
    await until(() => cp.requests[0]);
    sub.close();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(cp.requests).toHaveLength(1);
  });

  it('reconnects after the control plane restarts and asks again with the version it holds', async () => {
    let cp = await fakeControlPlane();
    server = cp.server;
    const port = cp.server.port;
    subscription = subscribe(port, {
      nodeId: 'ratelimit-test',
      resourceName: 'ratelimit',
      minBackoffMs: 50,
      maxBackoffMs: 200,
    });
    await until(() => cp.requests[0]);
    const nonce = cp.push('v7', ['x']);
    await until(() => cp.requests.find((r) => r.responseNonce === nonce));
    await cp.server.close(0);

    cp = await fakeControlPlane(port);
    server = cp.server;
    const again = await until(() => cp.requests[0], 10_000);
    expect(again.node?.id).toBe('ratelimit-test');
    expect(again.versionInfo).toBe('v7');
  });
});
