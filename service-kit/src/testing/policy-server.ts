import type { ServerCredentials, ServerDuplexStream } from '@grpc/grpc-js';
import {
  type AggregatedDiscoveryServiceServer,
  AggregatedDiscoveryServiceService,
} from '@sekisho/proto/envoy/service/discovery/v3/ads';
import type { DiscoveryRequest, DiscoveryResponse } from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { type GrpcServer, startGrpcServer } from '../grpc-server';

// For tests of a policy subscriber (service-kit's policy client, ext-authz, the rate-limit
// service): a real ADS gRPC server that records every request and sends exactly the
// responses a test pushes, including ones the real control plane never would (garbage
// bytes, foreign types), so NACK paths can be driven.

export interface PolicyServer {
  server: GrpcServer;
  port: number;
  /** Every DiscoveryRequest received, in order, across streams. */
  requests: DiscoveryRequest[];
  connected(): boolean;
  /** Streams opened so far (one per subscriber process, e.g. each worker of SEKISHO_WORKERS). */
  streamCount(): number;
  /** Sends a response on every stream opened so far. */
  pushAll(typeUrl: string, version: string, value: Uint8Array): void;
  /** Sends a response on the newest stream; returns its nonce. */
  push(typeUrl: string, version: string, value: Uint8Array): string;
  /** Waits for the request that answers (ACKs or NACKs) the response with this nonce. */
  answerTo(nonce: string, timeoutMs?: number): Promise<DiscoveryRequest>;
  close(): Promise<void>;
}

/** `credentials`: TLS for the port (tests of the client's verification of the control plane). */
export async function startPolicyServer(port = 0, credentials?: ServerCredentials): Promise<PolicyServer> {
  const requests: DiscoveryRequest[] = [];
  const streams: Array<ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>> = [];
  const implementation: AggregatedDiscoveryServiceServer = {
    streamAggregatedResources: (call) => {
      streams.push(call);
      call.on('data', (request: DiscoveryRequest) => requests.push(request));
      call.on('error', () => {});
    },
    deltaAggregatedResources: (call) => call.end(),
  };
  const server = await startGrpcServer({
    port,
    register: (s) => s.addService(AggregatedDiscoveryServiceService, implementation),
    ...(credentials ? { credentials } : {}),
  });
  let nonce = 0;
  return {
    server,
    port: server.port,
    requests,
    connected: () => streams.length > 0,
    streamCount: () => streams.length,
    push(typeUrl, version, value) {
      nonce += 1;
      streams.at(-1)?.write(response(typeUrl, version, value, nonce));
      return String(nonce);
    },
    pushAll(typeUrl, version, value) {
      for (const stream of streams) {
        nonce += 1;
        stream.write(response(typeUrl, version, value, nonce));
      }
    },
    async answerTo(sent, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const answer = requests.find((r) => r.responseNonce === sent);
        if (answer) return answer;
        if (Date.now() > deadline) throw new Error(`no answer to the response with nonce ${sent} in ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    close: () => server.close(0),
  };
}

const response = (typeUrl: string, version: string, value: Uint8Array, nonce: number): DiscoveryResponse => ({
  versionInfo: version,
  resources: [{ typeUrl, value: Buffer.from(value) }],
  canary: false,
  typeUrl,
  nonce: String(nonce),
});
