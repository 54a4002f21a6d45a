import { Server, ServerCredentials } from '@grpc/grpc-js';
import { createHealthServer, HealthService } from './grpc-health';

export interface GrpcServer {
  server: Server;
  port: number;
  /** Stops accepting calls, lets in-flight calls finish for graceMs, then cancels the rest. */
  close(graceMs?: number): Promise<void>;
}

export async function startGrpcServer(opts: {
  host?: string;
  port: number;
  register: (server: Server) => void;
  /**
   * Readiness for grpc.health.v1.Health, which every server serves (Envoy's gRPC health
   * checks ask it); always SERVING when omitted.
   */
  isServing?: () => boolean;
}): Promise<GrpcServer> {
  const server = new Server({
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  });
  opts.register(server);
  server.addService(HealthService, createHealthServer({ isServing: opts.isServing ?? (() => true) }));
  const host = opts.host ?? '127.0.0.1';
  const target = host.includes(':') ? `[${host}]:${opts.port}` : `${host}:${opts.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(target, ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  return {
    server,
    port,
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
