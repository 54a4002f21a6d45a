// Conformance of the lean gRPC server (service-kit's own HTTP/2) against a real grpc-js client over real
// sockets (and raw HTTP/2 where a grpc-js client cannot produce the input): what a unary
// call's caller, Envoy included, relies on.
import { connect, constants as h2 } from 'node:http2';
import { gzipSync } from 'node:zlib';
import { type Client, credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import {
  RateLimitRequest,
  RateLimitResponse,
  RateLimitResponse_Code,
  RateLimitServiceClient,
  type RateLimitServiceServer,
  RateLimitServiceService,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GrpcServer, startGrpcServer, transportFromEnv } from './grpc-server';
import { encodeGrpcMessage, parseGrpcTimeout } from './unary-grpc-server';

const path = RateLimitServiceService.shouldRateLimit.path;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The test service: the request's domain says what to do ("ok", "wait:<ms>", "fail", "throw"). */
function startTestServer(seen: { cancelledAtEnd: boolean[] }) {
  return startGrpcServer({
    port: 0,
    transport: 'http2',
    register: (server) =>
      server.addService(RateLimitServiceService, {
        // Written as the services write theirs: grpc-js's handler types, served by the lean server.
        shouldRateLimit: (call, callback) => {
          const domain = call.request.domain;
          if (domain === 'throw') throw new Error('handler bug with a secret');
          if (domain === 'fail') {
            callback({ code: status.PERMISSION_DENIED, details: 'refusé: 100% sure\nsecond line' });
            return;
          }
          const wait = domain.startsWith('wait:') ? Number(domain.slice(5)) : 0;
          setTimeout(() => {
            seen.cancelledAtEnd.push(call.cancelled);
            callback(
              null,
              RateLimitResponse.fromPartial({ overallCode: RateLimitResponse_Code.OK, rawBody: Buffer.from(domain) }),
            );
          }, wait);
        },
      } satisfies RateLimitServiceServer),
  });
}

function callOn(client: RateLimitServiceClient, domain: string, deadlineMs?: number) {
  return new Promise<RateLimitResponse>((resolve, reject) => {
    const options = deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
    client.shouldRateLimit(RateLimitRequest.fromPartial({ domain }), new Metadata(), options, (error, response) =>
      error ? reject(error) : resolve(response as RateLimitResponse),
    );
  });
}

/** A unary call whose request bytes are whatever `body` is: for malformed and oversized input. */
function rawCall(client: Client, method: string, body: Buffer) {
  return new Promise<Buffer>((resolve, reject) =>
    client.makeUnaryRequest(
      method,
      () => body,
      (bytes: Buffer) => bytes,
      Buffer.alloc(0),
      (error: ServiceError | null, response?: Buffer) => (error ? reject(error) : resolve(response as Buffer)),
    ),
  );
}

/** One call over bare HTTP/2 (no grpc-js): the headers and trailers it ended with. */
async function h2Call(port: number, headers: Record<string, string>, body: Buffer) {
  const session = connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise<{ headers: Record<string, unknown>; trailers: Record<string, unknown> }>(
      (resolve, reject) => {
        const stream = session.request({
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
          te: 'trailers',
          ...headers,
        });
        let head: Record<string, unknown> = {};
        let trailers: Record<string, unknown> = {};
        stream.on('response', (h) => {
          head = h;
        });
        stream.on('trailers', (t) => {
          trailers = t;
        });
        stream.on('data', () => {});
        stream.on('close', () => resolve({ headers: head, trailers }));
        stream.on('error', reject);
        stream.end(body);
      },
    );
  } finally {
    session.close();
  }
}

const frame = (flag: number, message: Buffer, declared = message.length) => {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flag;
  out.writeUInt32BE(declared, 1);
  message.copy(out, 5);
  return out;
};
/** The grpc-status of a raw answer: from a trailers-only response, or from the trailers. */
const grpcStatusOf = (answer: { headers: Record<string, unknown>; trailers: Record<string, unknown> }) =>
  Number(answer.headers['grpc-status'] ?? answer.trailers['grpc-status']);

describe('responses written with one reused writer (encoders)', () => {
  let server: GrpcServer;
  let client: RateLimitServiceClient;
  beforeAll(async () => {
    server = await startGrpcServer({
      port: 0,
      transport: 'http2',
      register: (registrar) =>
        registrar.addService(
          RateLimitServiceService,
          {
            // "<n>": a body of n bytes, each one the call's own mark; "bad": a response encode throws on mid-message.
            shouldRateLimit: (call, callback) => {
              const [size, mark] = call.request.domain.split(':');
              if (size === 'bad') {
                callback(null, { ...RateLimitResponse.fromPartial({}), statuses: [null] } as never);
                return;
              }
              const body = Buffer.alloc(Number(size), Number(mark));
              setTimeout(
                () =>
                  callback(
                    null,
                    RateLimitResponse.fromPartial({
                      overallCode: RateLimitResponse_Code.OK,
                      rawBody: body,
                      responseHeadersToAdd: [{ key: 'mark', value: String(mark) }],
                    }),
                  ),
                Number(mark) % 7,
              );
            },
          } satisfies RateLimitServiceServer,
          { shouldRateLimit: RateLimitResponse.encode },
        ),
    });
    client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  });
  afterAll(async () => {
    client.close();
    await server.close(0);
  });

  it('answers each call with its own bytes, large after small and small after large, concurrently', async () => {
    const sizes = [0, 5000, 3, 70_000, 1, 200, 70_000, 0, 12];
    const answers = await Promise.all(sizes.map((size, mark) => callOn(client, `${size}:${mark}`)));
    answers.forEach((answer, mark) => {
      expect(answer.rawBody).toEqual(Buffer.alloc(sizes[mark] as number, mark));
      expect(answer.responseHeadersToAdd.map((h) => [h.key, h.value])).toEqual([['mark', String(mark)]]);
    });
  });

  it('answers INTERNAL when a response cannot be encoded, and the next answers are whole', async () => {
    await expect(callOn(client, 'bad')).rejects.toMatchObject({
      code: status.INTERNAL,
      details: expect.stringContaining('response could not be encoded'),
    });
    for (const [size, mark] of [
      [10, 1],
      [300, 2],
    ] as const) {
      const answer = await callOn(client, `${size}:${mark}`);
      expect(answer.rawBody).toEqual(Buffer.alloc(size, mark));
      expect(answer.responseHeadersToAdd.map((h) => [h.key, h.value])).toEqual([['mark', String(mark)]]);
    }
  });
});

describe('the lean http2 gRPC server, called by grpc-js', () => {
  const seen = { cancelledAtEnd: [] as boolean[] };
  let server: GrpcServer;
  let client: RateLimitServiceClient;

  beforeAll(async () => {
    server = await startTestServer(seen);
    expect(server.transport).toBe('http2');
    client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  });
  afterAll(async () => {
    client.close();
    await server.close(0);
  });

  it('answers a unary call with the decoded request echoed', async () => {
    const response = await callOn(client, 'ok');
    expect(response.overallCode).toBe(RateLimitResponse_Code.OK);
    expect(Buffer.from(response.rawBody).toString()).toBe('ok');
  });

  it("passes a handler's error on as grpc-status and a percent-encoded grpc-message", async () => {
    await expect(callOn(client, 'fail')).rejects.toMatchObject({
      code: status.PERMISSION_DENIED,
      details: 'refusé: 100% sure\nsecond line',
    });
    const raw = await h2Call(
      server.port,
      {},
      frame(0, Buffer.from(RateLimitRequest.encode({ domain: 'fail', descriptors: [], hitsAddend: 0 }).finish())),
    );
    expect(raw.headers['grpc-message']).toBe('refus%C3%A9: 100%25 sure%0Asecond line');
  });

  it('answers UNKNOWN, without the error text, when the handler throws', async () => {
    await expect(callOn(client, 'throw')).rejects.toMatchObject({
      code: status.UNKNOWN,
      details: 'the method handler failed',
    });
  });

  it('answers UNIMPLEMENTED for a method it does not serve', async () => {
    await expect(rawCall(client, '/no.such.Service/Method', Buffer.alloc(0))).rejects.toMatchObject({
      code: status.UNIMPLEMENTED,
      details: 'unknown method /no.such.Service/Method',
    });
  });

  it('answers INTERNAL with a clear message for a message that is not the request type', async () => {
    const error = await rawCall(client, path, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])).catch((e) => e);
    expect(error).toMatchObject({ code: status.INTERNAL });
    expect(error.details).toMatch(/^request message could not be decoded: /);
  });

  it('answers RESOURCE_EXHAUSTED for a message over 4 MiB, and keeps serving the connection', async () => {
    const error = await rawCall(client, path, Buffer.alloc(4 * 1024 * 1024 + 1)).catch((e) => e);
    expect(error).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    expect(error.details).toBe('request message of 4194305 bytes is larger than the limit of 4194304 bytes');
    expect((await callOn(client, 'ok')).overallCode).toBe(RateLimitResponse_Code.OK);
  });

  it('answers DEADLINE_EXCEEDED when the deadline passes, and the handler sees the call cancelled', async () => {
    seen.cancelledAtEnd.length = 0;
    await expect(callOn(client, 'wait:300', 50)).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
    await sleep(350);
    expect(seen.cancelledAtEnd).toEqual([true]);
  });

  it('sends DEADLINE_EXCEEDED itself from grpc-timeout (a client without its own timer)', async () => {
    const body = frame(
      0,
      Buffer.from(RateLimitRequest.encode(RateLimitRequest.fromPartial({ domain: 'wait:400' })).finish()),
    );
    const started = Date.now();
    const answer = await h2Call(server.port, { 'grpc-timeout': '50m' }, body);
    expect(grpcStatusOf(answer)).toBe(status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeLessThan(350);
  });

  it('refuses a malformed grpc-timeout with INTERNAL naming the header', async () => {
    const answer = await h2Call(server.port, { 'grpc-timeout': '1x' }, frame(0, Buffer.alloc(0)));
    expect(grpcStatusOf(answer)).toBe(status.INTERNAL);
    expect(answer.headers['grpc-message']).toBe('malformed grpc-timeout "1x"');
  });

  it('writes nothing for a call the client cancelled, and goes on serving', async () => {
    seen.cancelledAtEnd.length = 0;
    const call = client.shouldRateLimit(RateLimitRequest.fromPartial({ domain: 'wait:150' }), () => {});
    await sleep(30);
    call.cancel();
    await sleep(200);
    expect(seen.cancelledAtEnd).toEqual([true]);
    expect((await callOn(client, 'ok')).overallCode).toBe(RateLimitResponse_Code.OK);
  });

  it('serves 200 concurrent calls on one connection', async () => {
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => callOn(client, `wait:${20 + (i % 30)}`)));
    expect(answers.every((a) => a.overallCode === RateLimitResponse_Code.OK)).toBe(true);
    expect(new Set(answers.map((a) => Buffer.from(a.rawBody).toString())).size).toBe(30);
  });

  it('decodes a gzip-compressed message (grpc-js compressing its requests)', async () => {
    const gzipClient = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure(), {
      'grpc.default_compression_algorithm': 2,
    });
    try {
      expect(Buffer.from((await callOn(gzipClient, 'ok')).rawBody).toString()).toBe('ok');
    } finally {
      gzipClient.close();
    }
  });

  it.each([
    ['an encoding it does not know', { 'grpc-encoding': 'snappy' }, status.UNIMPLEMENTED, /"snappy" is not supported/],
    ['the compressed flag with identity', {}, status.INTERNAL, /compressed flag set but grpc-encoding is identity/],
    ['gzip that is not gzip', { 'grpc-encoding': 'gzip' }, status.INTERNAL, /could not be decompressed/],
  ])('refuses a compressed message with %s', async (_name, headers, code, message) => {
    const answer = await h2Call(server.port, headers, frame(1, Buffer.from('not compressed at all')));
    expect(grpcStatusOf(answer)).toBe(code);
    expect(decodeURIComponent(String(answer.headers['grpc-message']))).toMatch(message);
  });

  it('refuses gzip that inflates past the size limit with RESOURCE_EXHAUSTED', async () => {
    const bomb = gzipSync(Buffer.alloc(5 * 1024 * 1024));
    const answer = await h2Call(server.port, { 'grpc-encoding': 'gzip' }, frame(1, bomb));
    expect(grpcStatusOf(answer)).toBe(status.RESOURCE_EXHAUSTED);
  });

  it.each([
    ['no message at all', Buffer.alloc(0), /carries no message/],
    ['a truncated frame', frame(0, Buffer.from([1, 2, 3]), 10), /truncated request/],
    [
      'two messages',
      Buffer.concat([frame(0, Buffer.alloc(0)), frame(0, Buffer.alloc(0))]),
      /carries one request message/,
    ],
    ['an invalid flag byte', frame(7, Buffer.alloc(0)), /invalid compressed flag 7/],
  ])('answers INTERNAL for %s', async (_name, body, message) => {
    const answer = await h2Call(server.port, {}, body);
    expect(grpcStatusOf(answer)).toBe(status.INTERNAL);
    expect(decodeURIComponent(String(answer.headers['grpc-message']))).toMatch(message);
  });

  it('answers 415 to a request that is not gRPC', async () => {
    const answer = await h2Call(server.port, { 'content-type': 'application/json' }, Buffer.from('{}'));
    expect(answer.headers[h2.HTTP2_HEADER_STATUS]).toBe(415);
  });
});

describe('graceful shutdown of the lean http2 gRPC server', () => {
  it('lets in-flight calls finish, refuses new ones, then closes', async () => {
    const seen = { cancelledAtEnd: [] as boolean[] };
    const server = await startTestServer(seen);
    const client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
    try {
      await callOn(client, 'ok');
      const inFlight = Array.from({ length: 20 }, () => callOn(client, 'wait:200'));
      await sleep(50);
      const closed = server.close(5_000);
      await sleep(20);
      await expect(callOn(client, 'ok', 1_000)).rejects.toMatchObject({});
      const answers = await Promise.all(inFlight);
      expect(answers).toHaveLength(20);
      expect(seen.cancelledAtEnd.slice(1)).toEqual(Array(20).fill(false));
      await closed;
    } finally {
      client.close();
    }
  });

  it('cuts the calls still running when the grace period ends', async () => {
    const server = await startTestServer({ cancelledAtEnd: [] });
    const client = new RateLimitServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
    try {
      await callOn(client, 'ok');
      const slow = callOn(client, 'wait:3000').catch((e: ServiceError) => e);
      await sleep(30);
      const started = Date.now();
      await server.close(100);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(await slow).toMatchObject({ code: expect.any(Number) });
    } finally {
      client.close();
    }
  });
});

describe('transport selection', () => {
  it('reads SEKISHO_GRPC_TRANSPORT, http2 by default, and names the variable on a bad value', () => {
    expect(transportFromEnv({})).toBe('http2');
    expect(transportFromEnv({ SEKISHO_GRPC_TRANSPORT: 'grpc-js' })).toBe('grpc-js');
    expect(() => transportFromEnv({ SEKISHO_GRPC_TRANSPORT: 'h3' })).toThrow(/SEKISHO_GRPC_TRANSPORT/);
  });

  it('keeps a server with a streaming method (ADS) on grpc-js', async () => {
    const { AggregatedDiscoveryServiceService } = await import('@sekisho/proto/envoy/service/discovery/v3/ads');
    const server = await startGrpcServer({
      port: 0,
      register: (s) =>
        s.addService(AggregatedDiscoveryServiceService, {
          streamAggregatedResources: () => {},
          deltaAggregatedResources: () => {},
        }),
    });
    expect(server.transport).toBe('grpc-js');
    await server.close(0);
  });
});

describe('grpc-message and grpc-timeout encoding', () => {
  it.each([
    ['plain text', 'plain text'],
    ['100%', '100%25'],
    ['é\n', '%C3%A9%0A'],
  ])('percent-encodes %j as %j', (message, encoded) => expect(encodeGrpcMessage(message)).toBe(encoded));

  it.each([
    ['1S', 1_000],
    ['250m', 250],
    ['2M', 120_000],
    ['1H', 3_600_000],
    ['5000u', 5],
    ['99999999n', 99.999999],
    ['123456789m', undefined],
    ['1', undefined],
    ['-1S', undefined],
  ])('reads grpc-timeout %j as %j ms', (value, ms) => expect(parseGrpcTimeout(value)).toBe(ms));
});
