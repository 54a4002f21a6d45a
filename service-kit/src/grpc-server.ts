import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import * as z from 'zod';
import { envEnum, loadConfig } from './config';
import { createHealthServer, HealthService } from './grpc-health';
import { type EncodeInto, startUnaryGrpcServer } from './unary-grpc-server';

export interface GrpcServer {
  port: number;
  /** Which implementation serves the calls (see `GrpcTransport`). */
  transport: GrpcTransport;
  /** Stops accepting calls, lets in-flight calls finish for graceMs, then cancels the rest. */
  close(graceMs?: number): Promise<void>;
}

/**
 * `http2`: the lean unary server on service-kit's own HTTP/2 (unary-grpc-server.ts, h2/), for the hot path;
 * `grpc-js`: @grpc/grpc-js. A server with a streaming method (the control plane's ADS) always
 * runs on grpc-js, since the lean server serves unary calls only.
 */
export type GrpcTransport = 'http2' | 'grpc-js';

/** What `register` is given: grpc-js's `addService`, whichever transport serves it. */
export interface GrpcServiceRegistrar {
  /**
   * `encoders` (http2 transport; grpc-js uses the definition's serializers): per method name, the
   * response type's ts-proto `encode`, so responses are written with one reused writer.
   */
  addService(
    service: ServiceDefinition,
    implementation: UntypedServiceImplementation,
    encoders?: Readonly<Record<string, EncodeInto>>,
  ): void;
}

const transportSchema = z.object({ SEKISHO_GRPC_TRANSPORT: envEnum(['http2', 'grpc-js'], 'http2') });

/** SEKISHO_GRPC_TRANSPORT (default http2); throws ConfigError naming the variable on another value. */
export function transportFromEnv(env: NodeJS.ProcessEnv = process.env): GrpcTransport {
  return loadConfig(transportSchema, env).SEKISHO_GRPC_TRANSPORT;
}

export async function startGrpcServer(opts: {
  host?: string;
  port: number;
  register: (server: GrpcServiceRegistrar) => void;
  /**
   * Readiness for grpc.health.v1.Health, which every server serves (Envoy's gRPC health
   * checks ask it); always SERVING when omitted.
   */
  isServing?: () => boolean;
  /** Default: SEKISHO_GRPC_TRANSPORT, else http2 (grpc-js when a method streams). */
  transport?: GrpcTransport;
  /** TLS for the port (grpc-js only: the control plane's mTLS channel); default plaintext. */
  credentials?: ServerCredentials;
  /** grpc-js only: ping every connection this often (ms) and drop one that does not answer in 10 s. */
  keepaliveMs?: number;
}): Promise<GrpcServer> {
  const services: Array<
    [ServiceDefinition, UntypedServiceImplementation, Readonly<Record<string, EncodeInto>> | undefined]
  > = [];
  opts.register({
    addService: (service, implementation, encoders) => services.push([service, implementation, encoders]),
  });
  services.push([HealthService, createHealthServer({ isServing: opts.isServing ?? (() => true) }), undefined]);
  const host = opts.host ?? '127.0.0.1';

  const streams = services.some(
    ([service]) =>
      service !== HealthService &&
      Object.values(service).some((method) => method.requestStream || method.responseStream),
  );
  const wanted = opts.transport ?? transportFromEnv();
  if (wanted === 'http2' && !streams && !opts.credentials) {
    const lean = await startUnaryGrpcServer({ host, port: opts.port });
    for (const [service, implementation, encoders] of services) lean.addService(service, implementation, encoders);
    return { port: lean.port, transport: 'http2', close: (graceMs = 5_000) => lean.close(graceMs) };
  }
  if (opts.transport === 'http2') throw new Error('the http2 gRPC transport serves unary methods only, without TLS');

  const server = new Server({
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    ...(opts.keepaliveMs ? { 'grpc.keepalive_time_ms': opts.keepaliveMs, 'grpc.keepalive_timeout_ms': 10_000 } : {}),
  });
  for (const [service, implementation] of services) server.addService(service, implementation);
  const target = host.includes(':') ? `[${host}]:${opts.port}` : `${host}:${opts.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(target, opts.credentials ?? ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  return {
    port,
    transport: 'grpc-js',
    close: (graceMs = 5_000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
