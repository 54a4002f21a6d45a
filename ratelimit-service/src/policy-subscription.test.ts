import { type RedisHandle, startRedis } from '@sekisho/devstack/redis';
import { RateLimitResponse_Code as Code } from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { policyResourceNames, policyTypeUrls, rateLimitDomain } from '@sekisho/service-kit/contract';
import { type PolicyServer, startPolicyServer } from '@sekisho/service-kit/testing/policy-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authenticated, eventually, startTestService, type TestService, testPolicy } from './test-helpers';

// The service's policy arrives over a real ADS stream. The control plane is played by a
// minimal ADS server (service-kit/src/testing) that records requests and pushes what the test gives it.

const typeUrl = policyTypeUrls.rateLimit;
let redis: RedisHandle;
let ads: PolicyServer;
let adsPort: number;
let service: TestService;
const push = (version: string, policy: RateLimitPolicy): string =>
  ads.push(typeUrl, version, RateLimitPolicy.encode(policy).finish());
const answerTo = (sent: string) => ads.answerTo(sent);

beforeAll(async () => {
  redis = await startRedis();
  ads = await startPolicyServer(0);
  adsPort = ads.port;
  service = await startTestService({
    redisUrl: redis.url,
    env: { RATELIMIT_XDS_ADDRESS: `127.0.0.1:${adsPort}`, RATELIMIT_NODE_ID: 'ratelimit-test-node' },
    subscribe: true,
  });
});

afterAll(async () => {
  await service?.close();
  await ads?.close();
  await redis?.stop();
});

describe('policy over ADS', () => {
  it('subscribes to the RateLimitPolicy resource, applies and ACKs it, and becomes ready', async () => {
    await eventually(() => ads.requests.length > 0);
    expect(ads.requests[0]).toMatchObject({
      typeUrl,
      resourceNames: [policyResourceNames.rateLimit],
      node: { id: 'ratelimit-test-node' },
    });
    const ack = await answerTo(push('v1', testPolicy));
    expect(ack.errorDetail).toBeUndefined();
    expect(ack.versionInfo).toBe('v1');
    await eventually(() => service.app.isReady());
    expect(service.app.status()).toMatchObject({ policy_version: 'v1', rule_count: testPolicy.rules.length });
    const response = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-ads')] });
    expect(response.statuses[0]?.currentLimit?.name).toBe('authenticated/user/60s');
  });

  it('NACKs an invalid policy with the reason and keeps the one in force', async () => {
    const invalid = RateLimitPolicy.fromPartial({
      domain: rateLimitDomain,
      rules: [
        testPolicy.rules[0] as RateLimitPolicy['rules'][number],
        testPolicy.rules[0] as RateLimitPolicy['rules'][number],
      ],
    });
    const nack = await answerTo(push('v2', invalid));
    expect(nack.errorDetail?.message).toMatch(/used more than once/);
    expect(nack.versionInfo).toBe('v1');
    expect(service.app.status()).toMatchObject({ policy_version: 'v1' });
    const response = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-ads')] });
    expect(response.overallCode).toBe(Code.OK);
  });

  it('keeps the policy in force and stays ready while the control plane is gone, then resubscribes', async () => {
    const logsBefore = service.logs.length;
    await ads.close();
    await eventually(() => service.logs.slice(logsBefore).some((r) => r.event_type === 'policy_stream_error'));
    expect(service.app.isReady()).toBe(true);
    expect(service.app.status()).toMatchObject({ policy_version: 'v1' });
    const response = await service.call({ domain: rateLimitDomain, descriptors: [authenticated('uid-gone')] });
    expect(response.statuses[0]?.currentLimit?.name).toBe('authenticated/user/60s');

    ads = await startPolicyServer(adsPort);
    await eventually(() => ads.connected());
    // The new stream says which version the service holds, so the control plane need not resend it.
    await eventually(() => ads.requests.at(-1)?.versionInfo === 'v1');
  });
});
