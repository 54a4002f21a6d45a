import { type NoopService, type NoopTransport, startNoopServer } from './noop-servers';

// A no-op server as its own process, so the benchmark can pin it to a core:
//   node --import tsx bench/src/noop-server-main.ts <ratelimit|authz> <grpc-js|http2|service-kit> <port>
const [service, transport, port] = process.argv.slice(2);
if (
  (service !== 'ratelimit' && service !== 'authz') ||
  (transport !== 'grpc-js' && transport !== 'http2' && transport !== 'service-kit')
) {
  console.error('usage: noop-server-main.ts <ratelimit|authz> <grpc-js|http2|service-kit> <port>');
  process.exit(2);
}
const server = await startNoopServer(service as NoopService, transport as NoopTransport, Number(port ?? 0));
console.log(`listening on ${server.port}`);
// Nothing to drain: a no-op has no state.
process.once('SIGTERM', () => process.exit(0));
