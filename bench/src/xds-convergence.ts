// npm run bench:xds-convergence — how long a one-route change takes to reach N proxies, state of
// the world and delta. The control plane's xDS side (real compiler, views, cache, ADS server
// over real gRPC; xds-server-main.ts) runs pinned to core 0 with a generated definition of
// 1,000 routes; N simulated proxies (raw ADS clients, one gRPC channel each, subscribing the
// way Envoy does: CDS and LDS wildcard, EDS by the clusters' names, RDS by name, ACKing every
// response) run in this process, pinned to core 1. For each change: convergence per proxy =
// the time its new route configuration arrived minus the time the control plane set the
// snapshot (compile not included; reported apart), and what each proxy received for it.
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { freePort } from '@sekisho/devstack/processes';
import { Cluster } from '@sekisho/proto/envoy/config/cluster/v3/cluster';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { AggregatedDiscoveryServiceClient } from '@sekisho/proto/envoy/service/discovery/v3/ads';
import {
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  DiscoveryRequest,
  type DiscoveryResponse,
} from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { ingressRouteConfigName } from '../../control-plane/src/ir/names';
import { typeUrls } from '../../control-plane/src/xds/type-urls';
import { assertTwoCores, cores, machine, spawnNodePinned, writeResults } from './common';
import { pinProcess } from './pin';
import { summarizeLatencies } from './stats';

type Variant = 'sotw' | 'delta';
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const cpuProfile = args.includes('--cpu-prof');
const only = (flag: string) => {
  const i = args.indexOf(flag);
  return i === -1 ? undefined : args[i + 1];
};
const known = new Set(['--quick', '--cpu-prof', '--variant', '--proxies']);
const unknown = args.filter((a, i) => !known.has(a) && !known.has(args[i - 1] ?? ''));
if (unknown.length > 0) {
  throw new Error(
    `unknown argument(s): ${unknown.join(' ')} (accepted: --quick, --cpu-prof, --variant sotw|delta, --proxies N)`,
  );
}
const routes = 1_000;
const proxyCounts = only('--proxies') ? [Number(only('--proxies'))] : [10, 100, 500];
const variants: Variant[] = only('--variant') ? [only('--variant') as Variant] : ['sotw', 'delta'];
const changesPerCase = quick ? 2 : 5;
const { cluster: CDS, endpoint: EDS, listener: LDS, route: RDS } = typeUrls;

interface Arrival {
  version: string;
  at: number;
}

const now = () => performance.timeOrigin + performance.now();
const bytesOf = (resources: Array<{ value: Uint8Array } | undefined>) =>
  resources.reduce((sum, r) => sum + (r?.value.length ?? 0), 0);

/** One simulated proxy: one channel, one ADS stream, everything ACKed at once. */
class SimProxy {
  readonly routeArrivals: Arrival[] = [];
  resources = 0;
  bytes = 0;
  responses = 0;
  private readonly client: AggregatedDiscoveryServiceClient;
  private readonly edsNames = new Set<string>();

  constructor(
    port: number,
    readonly id: string,
    readonly variant: Variant,
  ) {
    // A receive window like Envoy's (its HTTP/2 default is 256 MiB per stream): with grpc-js's
    // 64 KiB default, a 1 MB route configuration would wait on 16 window updates per proxy.
    this.client = new AggregatedDiscoveryServiceClient(`127.0.0.1:${port}`, credentials.createInsecure(), {
      'grpc-node.flow_control_window': 64 * 1024 * 1024,
    });
    if (variant === 'sotw') this.sotw();
    else this.delta();
  }

  private count(typeUrl: string, version: string, resources: number, bytes: number) {
    this.responses += 1;
    this.resources += resources;
    this.bytes += bytes;
    if (typeUrl === RDS) this.routeArrivals.push({ version, at: now() });
  }

  private sotw() {
    const call: ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> = this.client.streamAggregatedResources();
    call.on('error', () => {});
    const node = Node.fromPartial({ id: this.id, cluster: 'sekisho-ingress' });
    const send = (typeUrl: string, names: string[], r?: DiscoveryResponse) =>
      call.write(
        DiscoveryRequest.fromPartial({
          typeUrl,
          resourceNames: names,
          versionInfo: r?.versionInfo ?? '',
          responseNonce: r?.nonce ?? '',
        }),
      );
    const namesOf = new Map<string, string[]>([
      [CDS, []],
      [LDS, []],
      [RDS, [ingressRouteConfigName]],
    ]);
    call.on('data', (r: DiscoveryResponse) => {
      this.count(r.typeUrl, r.versionInfo, r.resources.length, bytesOf(r.resources));
      send(r.typeUrl, namesOf.get(r.typeUrl) ?? [...this.edsNames], r);
      if (r.typeUrl === CDS) {
        const names = r.resources.map((any) => Cluster.decode(any.value).name).sort();
        if (names.join() !== [...this.edsNames].join()) {
          this.edsNames.clear();
          for (const n of names) this.edsNames.add(n);
          send(EDS, names);
        }
      }
    });
    call.write(DiscoveryRequest.fromPartial({ node, typeUrl: CDS }));
    send(LDS, []);
    send(RDS, [ingressRouteConfigName]);
    this.close = () => {
      call.cancel();
      this.client.close();
    };
  }

  private delta() {
    const call: ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse> =
      this.client.deltaAggregatedResources();
    call.on('error', () => {});
    const node = Node.fromPartial({ id: this.id, cluster: 'sekisho-ingress' });
    call.on('data', (r: DeltaDiscoveryResponse) => {
      this.count(r.typeUrl, r.systemVersionInfo, r.resources.length, bytesOf(r.resources.map((x) => x.resource)));
      const subscribe = r.typeUrl === CDS ? r.resources.map((x) => x.name).filter((n) => !this.edsNames.has(n)) : [];
      call.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: r.typeUrl, responseNonce: r.nonce }));
      if (subscribe.length > 0) {
        for (const n of subscribe) this.edsNames.add(n);
        call.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: EDS, resourceNamesSubscribe: subscribe }));
      }
    });
    call.write(DeltaDiscoveryRequest.fromPartial({ node, typeUrl: CDS }));
    call.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: LDS }));
    call.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: RDS, resourceNamesSubscribe: [ingressRouteConfigName] }));
    this.close = () => {
      call.cancel();
      this.client.close();
    };
  }

  close: () => void = () => {};

  arrivalOf(version: string): number | undefined {
    return this.routeArrivals.find((a) => a.version === version)?.at;
  }
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

assertTwoCores();
pinProcess(process.pid, cores.loadGenerator);

/** A fresh control plane per case, so no case pays for the garbage or streams of the one before. */
async function startServer() {
  const xdsPort = await freePort();
  const controlPort = await freePort();
  const process_ = await spawnNodePinned(
    'xds-bench-server',
    cores.server,
    'bench/src/xds-server-main.ts',
    [],
    {
      ...process.env,
      XDS_BENCH_ROUTES: String(routes),
      XDS_BENCH_XDS_PORT: String(xdsPort),
      XDS_BENCH_CONTROL_PORT: String(controlPort),
    },
    cpuProfile,
  );
  await process_.waitForPort(controlPort, 60_000);
  const control = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${controlPort}${path}`, { method: 'POST' });
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return (await res.json()) as Record<string, unknown>;
  };
  return { xdsPort, control, stop: () => process_.stop() };
}

const results: Array<Record<string, unknown>> = [];
console.log(
  `bench:xds-convergence: ${routes} routes, proxies ${proxyCounts.join('/')}, ${changesPerCase} changes each`,
);
console.log(
  ['case', 'p50_ms', 'p99_ms', 'max_ms', 'resources', 'kB/proxy', 'sync_ms', 'heap_mb']
    .map((c) => c.padStart(14))
    .join(''),
);
for (const variant of variants) {
  for (const n of proxyCounts) {
    const server = await startServer();
    try {
      let k = 0;
      const { xdsPort, control } = server;
      const current = (await control(`/change?k=${++k}`)).route_version as string;
      const syncStart = now();
      const proxies = Array.from({ length: n }, (_, i) => new SimProxy(xdsPort, `${variant}-${n}-${i}`, variant));
      await until('initial sync', () => (proxies.every((p) => p.arrivalOf(current)) ? true : undefined), 180_000);
      const syncMs = now() - syncStart;
      await new Promise((r) => setTimeout(r, 300)); // let the initial EDS/ACK traffic settle
      const samples: number[] = [];
      const perChange: Array<{ resources: number; bytes: number; responses: number }> = [];
      let compileMs = 0;
      let heapMb = 0;
      for (let c = 0; c < changesPerCase; c += 1) {
        const before = proxies.map((p) => ({ resources: p.resources, bytes: p.bytes, responses: p.responses }));
        const change = await control(`/change?k=${++k}`);
        const version = change.route_version as string;
        compileMs += change.compile_ms as number;
        heapMb = Math.max(heapMb, change.heap_mb as number);
        const at = change.at as number;
        await until('convergence', () => (proxies.every((p) => p.arrivalOf(version)) ? true : undefined), 60_000);
        for (const p of proxies) samples.push((p.arrivalOf(version) as number) - at);
        await new Promise((r) => setTimeout(r, 200)); // anything pushed after the routes counts too
        perChange.push({
          resources: proxies.reduce((s, p, i) => s + p.resources - (before[i]?.resources ?? 0), 0) / n,
          bytes: proxies.reduce((s, p, i) => s + p.bytes - (before[i]?.bytes ?? 0), 0) / n,
          responses: proxies.reduce((s, p, i) => s + p.responses - (before[i]?.responses ?? 0), 0) / n,
        });
      }
      for (const p of proxies) p.close();
      const summary = summarizeLatencies(samples);
      const mean = (f: (x: (typeof perChange)[number]) => number) =>
        Math.round((perChange.reduce((s, x) => s + f(x), 0) / perChange.length) * 100) / 100;
      const row = {
        case: `${variant}-${n}-proxies`,
        variant,
        proxies: n,
        routes,
        changes: changesPerCase,
        ...summary,
        resources_per_proxy_per_change: mean((x) => x.resources),
        responses_per_proxy_per_change: mean((x) => x.responses),
        resource_bytes_per_proxy_per_change: mean((x) => x.bytes),
        initial_sync_ms: Math.round(syncMs),
        compile_ms_mean: Math.round((compileMs / changesPerCase) * 10) / 10,
        server_heap_mb: Math.round(heapMb * 10) / 10,
      };
      results.push(row);
      console.log(
        [
          row.case,
          row.p50_ms,
          row.p99_ms,
          row.max_ms,
          row.resources_per_proxy_per_change,
          Math.round(row.resource_bytes_per_proxy_per_change / 102.4) / 10,
          row.initial_sync_ms,
          row.server_heap_mb,
        ]
          .map((v) => String(v).padStart(14))
          .join(''),
      );
    } finally {
      await server.stop();
    }
  }
}

const file = await writeResults('xds-convergence', results as never, {
  ...machine(),
  server_cores: cores.server,
  load_generator_cores: cores.loadGenerator,
  what: 'convergence = new route configuration received by a proxy minus snapshot set on the control plane (compile excluded, see compile_ms_mean); proxies are raw ADS clients in one process',
  targets: {
    'p99 convergence, 100 proxies x 1000 routes': '<= 1000 ms',
    'delta resources per one-route change': 'constant (1)',
  },
});
console.log(`written ${file}`);
