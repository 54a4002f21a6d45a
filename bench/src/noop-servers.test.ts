import { credentials, Metadata, status } from '@grpc/grpc-js';
import { AuthorizationClient, CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import {
  RateLimitRequest,
  RateLimitResponse_Code,
  RateLimitServiceClient,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { afterEach, describe, expect, it } from 'vitest';
import { type NoopServer, type NoopTransport, startNoopServer } from './noop-servers';

// The no-op servers are the benchmarks' ceilings; the bare-http2 one speaks gRPC by hand, so a
// real grpc-js client over a real socket checks its framing, headers and trailers.

let server: NoopServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe.each<NoopTransport>(['http2', 'grpc-js', 'service-kit'])('the %s no-op server', (transport) => {
  it('answers ShouldRateLimit OK to a grpc-js client, many calls on one connection', async () => {
    server = await startNoopServer('ratelimit', transport);
    const client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
    try {
      const answers = await Promise.all(
        Array.from(
          { length: 50 },
          () =>
            new Promise<RateLimitResponse_Code>((resolve, reject) =>
              client.shouldRateLimit(RateLimitRequest.fromPartial({ domain: 'd' }), (error, response) =>
                error ? reject(error) : resolve(response.overallCode),
              ),
            ),
        ),
      );
      expect(new Set(answers)).toEqual(new Set([RateLimitResponse_Code.OK]));
    } finally {
      client.close();
    }
  });

  it('answers Check with status 0 and an ok_response', async () => {
    server = await startNoopServer('authz', transport);
    const client = new AuthorizationClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
    try {
      const response = await new Promise<{ code?: number; ok: boolean }>((resolve, reject) =>
        client.check(CheckRequest.fromPartial({}), (error, r) =>
          error ? reject(error) : resolve({ code: r.status?.code, ok: r.okResponse !== undefined }),
        ),
      );
      expect(response).toEqual({ code: 0, ok: true });
    } finally {
      client.close();
    }
  });
});

it('the http2 no-op answers UNIMPLEMENTED for a method it does not serve', async () => {
  server = await startNoopServer('authz', 'http2');
  const client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  try {
    const error = await new Promise<{ code?: number }>((resolve) =>
      client.shouldRateLimit(RateLimitRequest.fromPartial({}), new Metadata(), (e) => resolve(e ?? {})),
    );
    expect(error.code).toBe(status.UNIMPLEMENTED);
  } finally {
    client.close();
  }
});
