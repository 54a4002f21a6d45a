import { createServer, constants as h2 } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { AuthorizationService, CheckResponse } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import {
  RateLimitResponse,
  RateLimitResponse_Code,
  RateLimitServiceService,
} from '@sekisho/proto/envoy/service/ratelimit/v3/rls';
import { startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { frameMessage } from './grpc-frame';

// The transport ceilings: servers that answer every call OK without doing any work, one on
// grpc-js (what the policy services use today) and one on bare node:http2 speaking just
// enough gRPC for a unary call. Whatever a policy service does on top costs the difference.
// A third runs the no-op on service-kit's http2 transport: what that transport costs over bare.

export type NoopService = 'ratelimit' | 'authz';
/** `service-kit`: the same no-op behind service-kit's startGrpcServer on its http2 transport (what the services run). */
export type NoopTransport = 'grpc-js' | 'http2' | 'service-kit';

const okRateLimit = RateLimitResponse.fromPartial({ overallCode: RateLimitResponse_Code.OK });
const okCheck = CheckResponse.fromPartial({ status: { code: 0 }, okResponse: {} });

const definitions = {
  ratelimit: {
    path: RateLimitServiceService.shouldRateLimit.path,
    bytes: RateLimitResponse.encode(okRateLimit).finish(),
    grpcJs: (): [typeof RateLimitServiceService, UntypedServiceImplementation] => [
      RateLimitServiceService,
      { shouldRateLimit: (_call: unknown, done: (e: null, r: RateLimitResponse) => void) => done(null, okRateLimit) },
    ],
  },
  authz: {
    path: AuthorizationService.check.path,
    bytes: CheckResponse.encode(okCheck).finish(),
    grpcJs: (): [typeof AuthorizationService, UntypedServiceImplementation] => [
      AuthorizationService,
      { check: (_call: unknown, done: (e: null, r: CheckResponse) => void) => done(null, okCheck) },
    ],
  },
} as const;

export interface NoopServer {
  port: number;
  close(): Promise<void>;
}

export async function startNoopServer(service: NoopService, transport: NoopTransport, port = 0): Promise<NoopServer> {
  if (transport === 'service-kit') return startServiceKitNoop(service, port);
  return transport === 'grpc-js' ? startGrpcJsNoop(service, port) : startHttp2Noop(service, port);
}

async function startServiceKitNoop(service: NoopService, port: number): Promise<NoopServer> {
  const [definition, implementation] = definitions[service].grpcJs();
  const server = await startGrpcServer({
    port,
    register: (s) => s.addService(definition, implementation),
    transport: 'http2',
  });
  return { port: server.port, close: () => server.close(0) };
}

async function startGrpcJsNoop(service: NoopService, port: number): Promise<NoopServer> {
  const server = new Server();
  const [definition, implementation] = definitions[service].grpcJs();
  server.addService(definition, implementation);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error, p) =>
      error ? reject(error) : resolve(p),
    ),
  );
  return { port: bound, close: () => new Promise((resolve) => server.tryShutdown(() => resolve())) };
}

async function startHttp2Noop(service: NoopService, port: number): Promise<NoopServer> {
  const { path, bytes } = definitions[service];
  const body = frameMessage(bytes);
  const server = createServer();
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    if (headers[h2.HTTP2_HEADER_PATH] !== path) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
      return;
    }
    // The request body is read and dropped: the answer does not depend on it.
    stream.on('data', () => {});
    stream.on('end', () => {
      // The client may cancel a call it no longer waits for (h2load does at the end of a run).
      if (stream.destroyed || stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
