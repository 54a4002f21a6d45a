import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStackLogsOnFailure, writeDefinitionFile } from './support';

// Configuration changes under continuous load, through a real Envoy on each ADS variant:
// routes added and removed, a cluster renamed, a service's endpoint moved to another
// upstream, and the control plane stopped and restarted, while several clients (kept-alive
// connections and a new connection per request) call an authorized route. Every request must
// get the answer its route is in at that moment: make-before-break means no request ever
// meets a route naming a cluster Envoy lacks, or a cluster without its endpoints.

const profile = '/api/v1/customer/profile';
const extra = '/api/v1/customer/extra';

/**
 * What a path must answer: `live` 200 from the upstream, `removed` 404; `adding` / `removing`
 * either while the change propagates (the test moves the state on once it saw the change land).
 */
type RouteState = 'adding' | 'live' | 'removing' | 'removed';

interface Outcome {
  status: number;
  /** The demo upstream's `service` (which upstream answered), for a 200. */
  upstream?: string;
}

interface Failure {
  path: string;
  state: RouteState;
  client: string;
  detail: string;
}

/** One GET through the gateway; `agent: false` opens a new connection for this request alone. */
function get(base: string, path: string, token: string, agent: Agent | false): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, base),
      { method: 'GET', agent, headers: { authorization: `Bearer ${token}` }, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          let upstream: string | undefined;
          if (status === 200) {
            try {
              upstream = (JSON.parse(Buffer.concat(chunks).toString()) as { service?: string }).service;
            } catch {
              upstream = undefined;
            }
          }
          resolve({ status, upstream });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Clients calling every path in `routes` in turn until stopped, checking each answer against
 * the path's state when the request was sent and when it was answered (either is allowed: a
 * change may land in between).
 */
class Load {
  readonly routes = new Map<string, RouteState>([[profile, 'live']]);
  readonly failures: Failure[] = [];
  /** Answered requests per path and status ("200 customer", "404"). */
  readonly counts = new Map<string, number>();
  /** Upstreams that answered the profile route since the last reset. */
  readonly profileUpstreams = new Set<string>();
  private stopping = false;
  private readonly clients: Promise<void>[] = [];
  private readonly agents: Agent[] = [];

  constructor(
    private readonly base: string,
    private readonly token: string,
    private readonly maxRequestsPerClient: number,
  ) {}

  start(keptAlive: number, fresh: number): void {
    for (let i = 0; i < keptAlive; i++) {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      this.agents.push(agent);
      this.clients.push(this.run(`kept-alive-${i}`, agent));
    }
    for (let i = 0; i < fresh; i++) this.clients.push(this.run(`new-connection-${i}`, false));
  }

  total(): number {
    let n = 0;
    for (const count of this.counts.values()) n += count;
    return n;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.clients);
    for (const agent of this.agents) agent.destroy();
  }

  private async run(client: string, agent: Agent | false): Promise<void> {
    for (let sent = 0; !this.stopping && sent < this.maxRequestsPerClient; ) {
      for (const [path, before] of [...this.routes]) {
        if (this.stopping) return;
        sent++;
        let outcome: Outcome;
        try {
          outcome = await get(this.base, path, this.token, agent);
        } catch (error) {
          this.failures.push({ path, state: before, client, detail: `connection error: ${String(error)}` });
          continue;
        }
        const after = this.routes.get(path) ?? 'removed';
        const key = `${path} ${outcome.status}${outcome.upstream ? ` ${outcome.upstream}` : ''}`;
        this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
        if (path === profile && outcome.upstream) this.profileUpstreams.add(outcome.upstream);
        if (!accepts(before, outcome.status) && !accepts(after, outcome.status)) {
          this.failures.push({ path, state: before, client, detail: `status ${outcome.status}` });
        }
      }
    }
  }
}

function accepts(state: RouteState, status: number): boolean {
  switch (state) {
    case 'live':
      return status === 200;
    case 'removed':
      return status === 404;
    default:
      return status === 200 || status === 404;
  }
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
}

interface StatusBody {
  views: Record<string, Record<string, string>>;
  nodes: Array<{ view?: string; variant: string; types: Record<string, { ackedVersion?: string }> }>;
}

for (const adsApiType of ['GRPC', 'DELTA_GRPC'] as const) {
  const variant = adsApiType === 'GRPC' ? 'sotw' : 'delta';

  describe(`configuration changes under load, the ingress on ${variant} xDS`, () => {
    let stack: Stack;
    let dir: string;
    let definitionFile: string;
    let definition: Record<string, unknown>;
    let token: string;
    let load: Load;
    let customerEndpoint: string;
    let spareEndpoint: string;

    const status = async () => (await (await fetch(`${stack.controlPlaneAdminUrl}/status`)).json()) as StatusBody;
    /** The sum of a control-plane counter's series whose labels include `labels`. */
    const controlPlaneMetric = async (name: string, labels: string) => {
      const text = await (await fetch(`${stack.controlPlaneAdminUrl}/metrics`)).text();
      return text
        .split('\n')
        .filter((l) => l.startsWith(`${name}{`) && l.includes(labels))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    };
    const envoyStat = async (name: string) => {
      const text = await (await fetch(`${stack.envoyAdminUrl}/stats?filter=^${name.replaceAll('.', '\\.')}$`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name}: `));
      return line === undefined ? undefined : Number(line.slice(name.length + 2));
    };
    const envoyClusters = async () => {
      const body = (await (await fetch(`${stack.envoyAdminUrl}/clusters?format=json`)).json()) as {
        cluster_statuses?: Array<{ name: string }>;
      };
      return (body.cluster_statuses ?? []).map((c) => c.name);
    };
    /** Every type the ingress subscribes to ACKed at the version its view serves now. */
    const ingressConverged = async () => {
      const s = await status();
      const view = s.views.ingress ?? {};
      const ingress = s.nodes.find((n) => n.view === 'ingress');
      if (!ingress || Object.keys(view).length === 0) return undefined;
      for (const [typeUrl, version] of Object.entries(view)) {
        const acked = ingress.types[typeUrl]?.ackedVersion;
        if (ingress.types[typeUrl] && acked !== version) return undefined;
      }
      return view;
    };
    const routesOf = (def: Record<string, unknown>) => def.routes as Array<Record<string, unknown>>;
    const write = async (next: Record<string, unknown>) => {
      definition = next;
      await writeDefinitionFile(definitionFile, definition);
    };
    const answers = (path: string, wanted: number) => async () =>
      (await get(stack.gatewayUrl, path, token, false)).status === wanted ? true : undefined;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), `sekisho-xds-load-${variant}-`));
      definitionFile = join(dir, 'gateway.yaml');
      const [gateway, customer, spare, extAuthz, rateLimit] = await Promise.all([
        freePort(),
        freePort(),
        freePort(),
        freePort(),
        freePort(),
      ]);
      customerEndpoint = `127.0.0.1:${customer}`;
      spareEndpoint = `127.0.0.1:${spare}`;
      definition = {
        listeners: { http: { address: '127.0.0.1', port: gateway } },
        identity: {
          firebase: { projectId: 'demo-sekisho-e2e' },
          groupClaim: 'tier',
          groups: { basic_customer: ['read:own_profile'] },
        },
        policyServices: {
          extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
          rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
        },
        // The stack starts a demo upstream per endpoint; `spare` is where the customer
        // service's endpoint moves to.
        services: {
          customer: { endpoints: [customerEndpoint], healthCheck: '/health' },
          spare: { endpoints: [spareEndpoint], healthCheck: '/health' },
        },
        routes: [{ match: `GET ${profile}`, to: 'customer', rewrite: '/profile', require: ['read:own_profile'] }],
      };
      await writeDefinitionFile(definitionFile, definition);
      stack = await startStack({ definitionFile, logLevel: 'info', adsApiType, envoyConcurrency: 1 });
      token = await stack.mintToken('load-user', { group: 'basic_customer' });
      await until(ingressConverged, 20_000, 'the ingress ACKing its view');
      // Bounded: two kept-alive clients and two opening a connection per request, at most
      // 20,000 requests each (the changes below take a fraction of that on a loaded machine).
      load = new Load(stack.gatewayUrl, token, 20_000);
      load.start(2, 2);
    }, 120_000);

    afterAll(async () => {
      await load?.stop();
      await stack?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('serves a route added under load, and 404s it once removed', async () => {
      showStackLogsOnFailure(() => stack);
      load.routes.set(extra, 'adding');
      await write({
        ...definition,
        routes: [
          ...routesOf(definition),
          { match: `GET ${extra}`, to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
        ],
      });
      await until(answers(extra, 200), 20_000, 'the added route answering');
      load.routes.set(extra, 'live');
      await until(ingressConverged, 20_000, 'the ingress ACKing the added route');

      load.routes.set(extra, 'removing');
      await write({ ...definition, routes: routesOf(definition).filter((r) => r.match !== `GET ${extra}`) });
      await until(answers(extra, 404), 20_000, 'the removed route answering 404');
      load.routes.set(extra, 'removed');
      await until(ingressConverged, 20_000, 'the ingress ACKing the removal');
      // It stays gone under load; then the clients go back to the authorized route alone.
      const notFound = () => load.counts.get(`${extra} 404`) ?? 0;
      const seen = notFound();
      await until(async () => (notFound() >= seen + 50 ? true : undefined), 20_000, 'the removed route 404 under load');
      load.routes.delete(extra);
      expect(load.failures).toEqual([]);
    });

    it('keeps every request served while the route’s cluster is renamed', async () => {
      showStackLogsOnFailure(() => stack);
      const before = (await envoyClusters()).filter((name) => name.includes('customer'));
      expect(before.length).toBeGreaterThan(0);
      const services = definition.services as Record<string, unknown>;
      const { customer, ...others } = services;
      await write({
        ...definition,
        services: { ...others, patron: customer },
        routes: routesOf(definition).map((r) => (r.to === 'customer' ? { ...r, to: 'patron' } : r)),
      });
      // The old cluster goes once no route names it any more, the new one is there.
      await until(
        async () => {
          const names = await envoyClusters();
          return names.some((n) => n.includes('patron')) && !names.some((n) => before.includes(n)) ? true : undefined;
        },
        30_000,
        'Envoy having the renamed cluster and not the old one',
      );
      await until(ingressConverged, 20_000, 'the ingress ACKing the rename');
      expect(load.failures).toEqual([]);
    });

    it('keeps every request served while the service’s endpoint moves to another upstream', async () => {
      showStackLogsOnFailure(() => stack);
      expect([...load.profileUpstreams]).toEqual(['customer']);
      const services = definition.services as Record<string, Record<string, unknown>>;
      await write({
        ...definition,
        services: { ...services, patron: { ...services.patron, endpoints: [spareEndpoint] } },
      });
      await until(ingressConverged, 20_000, 'the ingress ACKing the moved endpoint');
      // The spare upstream answers the route from now on.
      await until(
        async () => {
          const outcome = await get(stack.gatewayUrl, profile, token, false);
          return outcome.upstream === 'spare' ? true : undefined;
        },
        30_000,
        'the spare upstream answering the route',
      );
      expect(load.failures).toEqual([]);
      expect(load.profileUpstreams.has('spare')).toBe(true);
    });

    it('keeps serving while the control plane restarts, and the restarted one serves the same versions', async () => {
      showStackLogsOnFailure(() => stack);
      const versions = await until(ingressConverged, 20_000, 'the ingress converged before the restart');
      const modified = {
        clusters: await envoyStat('cluster_manager.cluster_modified'),
        listeners: await envoyStat('listener_manager.listener_modified'),
      };
      const servedBefore = load.total();
      await stack.stopService('control-plane');
      await until(
        async () => ((await envoyStat('control_plane.connected_state')) === 0 ? true : undefined),
        20_000,
        'Envoy noticing the control plane gone',
      );
      // Requests keep being answered from Envoy's last configuration while nothing serves xDS.
      const servedWhileDown = load.total();
      await until(
        async () => (load.total() >= servedWhileDown + 20 ? true : undefined),
        20_000,
        'requests answered while the control plane is down',
      );
      await stack.startService('control-plane');
      await until(
        async () => ((await envoyStat('control_plane.connected_state')) === 1 ? true : undefined),
        30_000,
        'Envoy reconnecting to the restarted control plane',
      );
      // Content-hash versions: the restarted process serves exactly the versions Envoy has.
      const after = await until(ingressConverged, 30_000, 'the ingress ACKing the restarted control plane');
      expect(after).toEqual(versions);
      // Nothing Envoy holds was rebuilt: no cluster or listener replaced by the reconnection.
      expect(await envoyStat('cluster_manager.cluster_modified')).toBe(modified.clusters);
      expect(await envoyStat('listener_manager.listener_modified')).toBe(modified.listeners);
      if (variant === 'delta') {
        // initial_resource_versions named every resource at its content hash: the restarted
        // process sent the ingress (the one delta client) not a single resource.
        expect(await controlPlaneMetric('sekisho_xds_resources_sent_total', 'variant="delta"')).toBe(0);
      }
      expect(load.total()).toBeGreaterThan(servedBefore);
      expect(load.failures).toEqual([]);
    });

    it('answered every request as its route stood: zero failures', async () => {
      await load.stop();
      const counts = Object.fromEntries(load.counts);
      console.info(`${variant}: ${load.total()} requests answered`, counts);
      expect(load.failures).toEqual([]);
      expect(load.total()).toBeGreaterThan(100);
    });
  });
}
