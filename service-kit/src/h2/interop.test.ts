// The transport under the real clients it serves in tests and benchmarks: h2load (nghttp2)
// driving thousands of calls over one connection, and grpc-js receiving answers far larger
// than its 64 KB stream window, concurrently.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { findOnPath } from '@sekisho/devstack/host';
import {
  RateLimitRequest,
  RateLimitResponse,
  RateLimitResponse_Code,
  RateLimitServiceClient,
  type RateLimitServiceServer,
  RateLimitServiceService,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUnaryGrpcServer, type UnaryGrpcServer } from '../unary-grpc-server';
import { grpcMessage } from './raw-peer';

let server: UnaryGrpcServer;
let calls = 0;

beforeAll(async () => {
  server = await startUnaryGrpcServer({ host: '127.0.0.1', port: 0 });
  server.addService(
    RateLimitServiceService,
    {
      // The domain is the size of the raw body to answer with; each byte is the size mod 251.
      shouldRateLimit: (call, callback) => {
        calls++;
        const size = Number(call.request.domain) || 0;
        callback(
          null,
          RateLimitResponse.fromPartial({
            overallCode: RateLimitResponse_Code.OK,
            rawBody: Buffer.alloc(size, size % 251),
          }),
        );
      },
    } satisfies RateLimitServiceServer,
    { shouldRateLimit: RateLimitResponse.encode },
  );
});
afterAll(() => server.close(0));

describe('h2load (nghttp2) against the transport', () => {
  it('answers every one of 5,000 calls, 100 in flight on one connection', async () => {
    const h2load = findOnPath('h2load');
    if (!h2load) throw new Error('h2load is missing: `npm run setup` installs it (Debian nghttp2-client)');
    const bodyFile = join(tmpdir(), `sekisho-h2-interop-${process.pid}.bin`);
    await writeFile(
      bodyFile,
      grpcMessage(RateLimitRequest.encode(RateLimitRequest.fromPartial({ domain: '300' })).finish()),
    );
    const before = calls;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        h2load,
        [
          '-n',
          '5000',
          '-c',
          '1',
          '-m',
          '100',
          '-d',
          bodyFile,
          '-H',
          'content-type: application/grpc',
          '-H',
          'te: trailers',
          `http://127.0.0.1:${server.port}${RateLimitServiceService.shouldRateLimit.path}`,
        ],
        { timeout: 60_000 },
        (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(out).toMatch(
      /requests: 5000 total, 5000 started, 5000 done, 5000 succeeded, 0 failed, 0 errored, 0 timeout/,
    );
    expect(out).toMatch(/status codes: 5000 2xx/);
    // Every answer carried the 5 + 305-byte message (310 bytes): 1,550,000 bytes of DATA.
    expect(out).toMatch(/traffic: .* 1\.48MB \(1550000\) data/);
    expect(calls - before).toBe(5000);
  });
});

describe('grpc-js receiving answers larger than its windows', () => {
  let client: RateLimitServiceClient;
  beforeAll(() => {
    client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  });
  afterAll(() => client.close());

  const call = (size: number) =>
    new Promise<RateLimitResponse>((resolve, reject) =>
      client.shouldRateLimit(RateLimitRequest.fromPartial({ domain: String(size) }), (error, response) =>
        error ? reject(error) : resolve(response as RateLimitResponse),
      ),
    );

  it('delivers 1 MiB and 3 MiB answers whole', async () => {
    for (const size of [1 << 20, 3 << 20]) {
      const answer = await call(size);
      expect(Buffer.from(answer.rawBody).equals(Buffer.alloc(size, size % 251))).toBe(true);
    }
  });

  it('delivers 30 concurrent answers of 100–400 KB, each its own, on one connection', async () => {
    const sizes = Array.from({ length: 30 }, (_, i) => 100_000 + i * 10_007);
    const answers = await Promise.all(sizes.map(call));
    answers.forEach((answer, i) => {
      const size = sizes[i] as number;
      expect(Buffer.from(answer.rawBody).equals(Buffer.alloc(size, size % 251))).toBe(true);
    });
  });
});
