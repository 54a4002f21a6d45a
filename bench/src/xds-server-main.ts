// The control plane's xDS side for bench:xds-convergence, in its own (pinned) process: the
// real compiler, views, cache and ADS server over real gRPC, serving a generated definition
// of XDS_BENCH_ROUTES routes. POST /change?k=<n> on XDS_BENCH_CONTROL_PORT changes one route
// (route 0's rewrite becomes /v<n>), compiles and serves it, and answers when the snapshot is
// set, with the time it was set (performance.timeOrigin + now, comparable across processes
// on one machine), the compile time, and the heap.
import { createServer } from 'node:http';
import { startGrpcServer } from '@sekisho/service-kit/grpc-server';
import { createLogger } from '@sekisho/service-kit/logger';
import { Registry } from 'prom-client';
import { compileDefinition } from '../../control-plane/src/definition/load';
import { SnapshotCache } from '../../control-plane/src/xds/cache';
import { createAdsServer } from '../../control-plane/src/xds/server';
import { typeUrls } from '../../control-plane/src/xds/type-urls';
import { createViews, gatewayViews } from '../../control-plane/src/xds/views';

const routes = Number(process.env.XDS_BENCH_ROUTES ?? '1000');
const services = Number(process.env.XDS_BENCH_SERVICES ?? '50');
const xdsPort = Number(process.env.XDS_BENCH_XDS_PORT ?? '0');
const controlPort = Number(process.env.XDS_BENCH_CONTROL_PORT ?? '0');

/** A gateway of `routes` routes over `services` services; `k` changes route 0 only. */
function benchDefinition(k: number) {
  return {
    listeners: { http: { address: '127.0.0.1', port: 18_080 } },
    identity: { firebase: { projectId: 'demo-bench' }, groupClaim: 'tier', groups: { basic: ['read:things'] } },
    policyServices: { extAuthz: { address: '127.0.0.1:19001' }, rateLimit: { address: '127.0.0.1:19002' } },
    services: Object.fromEntries(
      Array.from({ length: services }, (_, i) => [`svc-${i}`, { endpoints: [`127.0.0.1:${20_000 + i}`] }]),
    ),
    routes: Array.from({ length: routes }, (_, i) => ({
      match: `GET /api/v1/things-${i}/*`,
      to: `svc-${i % services}`,
      rewrite: i === 0 ? `/v${k}/` : `/things/${i}/`,
      require: ['read:things'],
    })),
  };
}

function compileOrThrow(k: number) {
  const started = performance.now();
  const result = compileDefinition(benchDefinition(k));
  if (!result.ok) throw new Error(`bench definition invalid: ${JSON.stringify(result.errors.slice(0, 3))}`);
  return { compiled: result, compileMs: performance.now() - started };
}

const cache = new SnapshotCache();
const views = createViews(gatewayViews());
cache.setSnapshots(views.compile(compileOrThrow(0).compiled));
const ads = createAdsServer({
  cache,
  logger: createLogger('xds-bench', { level: 'warn' }),
  registry: new Registry(),
  classify: (node) => views.classify(node),
});
const grpc = await startGrpcServer({ port: xdsPort, register: (s) => ads.register(s) });

const control = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  if (url.pathname === '/change') {
    const k = Number(url.searchParams.get('k'));
    const { compiled, compileMs } = compileOrThrow(k);
    const changed = cache.setSnapshots(views.compile(compiled));
    const at = performance.timeOrigin + performance.now();
    res.end(
      JSON.stringify({
        at,
        compile_ms: compileMs,
        changed,
        route_version: cache.get(typeUrls.route, 'ingress')?.version,
        heap_mb: process.memoryUsage().heapUsed / 1024 / 1024,
      }),
    );
    return;
  }
  res.statusCode = 404;
  res.end();
});
await new Promise<void>((resolve) => control.listen(controlPort, '127.0.0.1', resolve));
console.log(JSON.stringify({ ready: true, xds_port: grpc.port }));

const stop = async () => {
  control.close();
  ads.close();
  await grpc.close(500);
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
