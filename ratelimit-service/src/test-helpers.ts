import { Writable } from 'node:stream';
import { credentials, Metadata } from '@grpc/grpc-js';
import {
  RateLimitRequest,
  type RateLimitResponse,
  RateLimitServiceClient,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { RateLimitPolicy } from '@sekisho/proto/sekisho/policy/v1/policy';
import { descriptorKeys as k, rateLimitDomain } from '@sekisho/service-kit/contract';
import { createLogger } from '@sekisho/service-kit/logger';
import { type RateLimitApp, startRateLimitApp } from './app';
import { loadRateLimitConfig } from './config';

// Shared by the tests that run the whole service: the real gRPC server and admin
// server on free ports, a real Redis, a grpc-js client, and the log records written.

export interface TestService {
  app: RateLimitApp;
  client: RateLimitServiceClient;
  /** Parsed JSON log records written so far. */
  logs: Array<Record<string, unknown>>;
  /** A ShouldRateLimit call; rejected with DEADLINE_EXCEEDED when not answered within deadlineMs (default 10 s). */
  call(request: Partial<RateLimitRequest>, deadlineMs?: number): Promise<RateLimitResponse>;
  admin(path: string): Promise<{ status: number; text: string }>;
  close(): Promise<void>;
}

export async function startTestService(opts: {
  redisUrl: string;
  env?: Record<string, string>;
  clock?: () => number;
  /** Subscribe to the control plane at RATELIMIT_XDS_ADDRESS (default: policy via app.applyPolicy). */
  subscribe?: boolean;
}): Promise<TestService> {
  const logs: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      logs.push(JSON.parse(String(chunk)));
      done();
    },
  });
  const config = loadRateLimitConfig({
    RATELIMIT_GRPC_PORT: '0',
    RATELIMIT_ADMIN_PORT: '0',
    RATELIMIT_REDIS_URL: opts.redisUrl,
    ...opts.env,
  });
  const app = await startRateLimitApp(config, {
    logger: createLogger('ratelimit-service', { level: 'info', destination }),
    clock: opts.clock,
    subscribe: opts.subscribe ?? false,
  });
  const client = new RateLimitServiceClient(`127.0.0.1:${app.grpcPort}`, credentials.createInsecure());
  return {
    app,
    client,
    logs,
    call: (request, deadlineMs = 10_000) =>
      new Promise((resolve, reject) =>
        client.shouldRateLimit(
          RateLimitRequest.fromPartial(request),
          new Metadata(),
          { deadline: Date.now() + deadlineMs },
          (error, response) => (error ? reject(error) : resolve(response)),
        ),
      ),
    admin: async (path) => {
      const response = await fetch(`http://127.0.0.1:${app.adminPort}${path}`);
      return { status: response.status, text: await response.text() };
    },
    close: async () => {
      client.close();
      await app.close();
    },
  };
}

export const headersOf = (response: RateLimitResponse): Record<string, string> =>
  Object.fromEntries(response.responseHeadersToAdd.map((h) => [h.key, h.value]));

export const descriptor = (...entries: Array<[string, string]>) => ({
  entries: entries.map(([key, value]) => ({ key, value })),
});

export const authenticated = (uid: string) => descriptor([k.limitClass, 'authenticated'], [k.user, uid]);
export const anonymous = (ip: string) =>
  descriptor([k.limitClass, 'unauthenticated'], [k.anonymous, 'true'], [k.remoteAddress, ip]);
export const routeForUser = (id: string, uid: string) => descriptor([k.route, id], [k.user, uid]);
export const routeForIp = (id: string, ip: string) => descriptor([k.route, id], [k.remoteAddress, ip]);

/** A small version of the reference design's limits, in the shape the control plane sends. */
export const testPolicy = RateLimitPolicy.fromPartial({
  domain: rateLimitDomain,
  rules: [
    {
      id: 'authenticated/user/60s',
      match: [
        { key: k.limitClass, value: 'authenticated' },
        { key: k.user, value: '' },
      ],
      requestsPerWindow: 3,
      windowSeconds: 60,
    },
    {
      id: 'authenticated/user/3600s',
      match: [
        { key: k.limitClass, value: 'authenticated' },
        { key: k.user, value: '' },
      ],
      requestsPerWindow: 5,
      windowSeconds: 3600,
    },
    {
      id: 'unauthenticated/ip/60s',
      match: [
        { key: k.limitClass, value: 'unauthenticated' },
        { key: k.anonymous, value: 'true' },
        { key: k.remoteAddress, value: '' },
      ],
      requestsPerWindow: 2,
      windowSeconds: 60,
    },
    {
      id: 'route:login/ip/60s',
      match: [
        { key: k.route, value: 'login' },
        { key: k.remoteAddress, value: '' },
      ],
      requestsPerWindow: 1,
      windowSeconds: 60,
      blockSeconds: 900,
    },
  ],
});

/** Polls until the condition holds (Redis reconnects in the background). */
export async function eventually(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Polls until the async condition holds (a message that travels through Redis to another replica). */
export async function eventuallyAsync(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The value of a metric without labels (or its first series) on the service's /metrics; 0 when absent. */
export async function metricValue(service: TestService, name: string): Promise<number> {
  const text = (await service.admin('/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}
