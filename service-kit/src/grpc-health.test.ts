// Every Sekisho gRPC server answers grpc.health.v1.Health the way Envoy's gRPC health
// checker expects: over a real gRPC connection, reflecting readiness as it changes.
import { credentials } from '@grpc/grpc-js';
import {
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthClient,
} from '@sekisho/proto/grpc/health/v1/health';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GrpcServer, type GrpcTransport, startGrpcServer } from './grpc-server';

describe.each<GrpcTransport>(['http2', 'grpc-js'])('grpc.health.v1.Health on startGrpcServer (%s)', (transport) => {
  let ready = false;
  let server: GrpcServer;
  let client: HealthClient;

  beforeAll(async () => {
    server = await startGrpcServer({ port: 0, register: () => {}, isServing: () => ready, transport });
    expect(server.transport).toBe(transport);
    client = new HealthClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  });

  afterAll(async () => {
    client.close();
    await server.close(0);
  });

  const check = (service: string) =>
    new Promise<HealthCheckResponse_ServingStatus>((resolve, reject) =>
      client.check({ service }, (error, response) => (error ? reject(error) : resolve(response.status))),
    );

  it('answers NOT_SERVING until the service is ready (no policy yet), then SERVING', async () => {
    ready = false;
    expect(await check('')).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
    ready = true;
    expect(await check('')).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it('answers NOT_FOUND for a service name it does not know', async () => {
    await expect(check('no.such.Service')).rejects.toMatchObject({ code: 5 });
  });

  it('streams the state on Watch, and again when it changes', async () => {
    ready = true;
    const call = client.watch({ service: '' });
    const seen: HealthCheckResponse_ServingStatus[] = [];
    const changed = new Promise<void>((resolve) => {
      call.on('data', (response: HealthCheckResponse) => {
        seen.push(response.status);
        if (seen.length === 1) ready = false;
        if (seen.length === 2) resolve();
      });
    });
    call.on('error', () => {});
    await changed;
    call.cancel();
    expect(seen).toEqual([HealthCheckResponse_ServingStatus.SERVING, HealthCheckResponse_ServingStatus.NOT_SERVING]);
  });

  it('is SERVING when the server gives no readiness', async () => {
    const plain = await startGrpcServer({ port: 0, register: () => {}, transport });
    const other = new HealthClient(`127.0.0.1:${plain.port}`, credentials.createInsecure());
    try {
      const status = await new Promise<HealthCheckResponse_ServingStatus>((resolve, reject) =>
        other.check({ service: '' }, (error, response) => (error ? reject(error) : resolve(response.status))),
      );
      expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      other.close();
      await plain.close(0);
    }
  });
});
