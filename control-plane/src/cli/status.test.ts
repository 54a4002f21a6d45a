// `sekisho status URL` as a process against a real running control plane (startControlPlane:
// its fastify admin API and gRPC xDS server) with raw ADS clients connected: an ingress on state
// of the world that refused its listeners, an ingress on delta, and ext-authz. Golden transcripts
// in testdata/out/status-*.txt, the admin port (and in --json the timestamps and peers) replaced
// by placeholders; versions are content hashes, so they are the same on every run. Rewrite with
//   UPDATE_GOLDEN=1 npx vitest run --project unit control-plane/src/cli/status.test.ts
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { nodeViewKey } from '@sekisho/service-kit/contract';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, configSchema, startControlPlane } from '../main';
import { AdsTestStream, adsClient, captureLogger, DeltaTestStream, eventually } from '../xds/test-helpers';
import { typeUrls } from '../xds/type-urls';

const run = promisify(execFile);
const testdata = resolve(import.meta.dirname, 'testdata');
const cliMain = resolve(import.meta.dirname, 'main.ts');
const update = process.env.UPDATE_GOLDEN === '1';

async function sekisho(args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', cliMain, ...args], {
      cwd: testdata,
      env: { ...process.env, INIT_CWD: testdata },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  await new Promise((done) => server.close(done));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

describe('sekisho status', () => {
  let cp: ControlPlane;
  let client: ReturnType<typeof adsClient>;
  const streams: Array<{ cancel(): void }> = [];
  let url: string;
  let unreachable: string;

  beforeAll(async () => {
    const config = configSchema.parse({
      CONTROL_PLANE_DEFINITION: 'minimal.gateway.yaml',
      CONTROL_PLANE_XDS_PORT: '0',
      CONTROL_PLANE_ADMIN_PORT: '0',
      CONTROL_PLANE_ADMIN_TOKEN_FILE: 'admin-token',
    });
    cp = await startControlPlane(config, {
      logger: captureLogger('warn').logger,
      registry: new Registry(),
      cwd: testdata,
    });
    url = `http://127.0.0.1:${cp.adminPort}`;
    unreachable = `http://127.0.0.1:${await closedPort()}`;
    client = adsClient(cp.xdsPort);

    // The ingress on state of the world: clusters ACKed, listeners refused.
    const sotw = new AdsTestStream(client);
    streams.push(sotw);
    sotw.send({ typeUrl: typeUrls.cluster }, 'ingress-a', 'sekisho-ingress');
    sotw.ack(await sotw.next());
    sotw.send({ typeUrl: typeUrls.listener });
    const listeners = await sotw.next();
    sotw.send({
      typeUrl: typeUrls.listener,
      responseNonce: listeners.nonce,
      errorDetail: {
        code: 3,
        message: 'Error adding/updating listener(s) ingress_http:\n  refused by test',
        details: [],
      },
    });
    // The ingress on delta: clusters and endpoints ACKed.
    const delta = new DeltaTestStream(client);
    streams.push(delta);
    delta.send({ typeUrl: typeUrls.cluster }, { id: 'ingress-b', cluster: 'sekisho-ingress' });
    delta.ack(await delta.next());
    delta.send({ typeUrl: typeUrls.endpoint, resourceNamesSubscribe: ['svc_customer'] });
    delta.ack(await delta.next());
    // ext-authz, naming its view in the node metadata.
    const policy = new DeltaTestStream(client);
    streams.push(policy);
    policy.send(
      { typeUrl: typeUrls.authzPolicy, resourceNamesSubscribe: ['authz'] },
      { id: 'ext-authz-1', cluster: 'sekisho', metadata: { [nodeViewKey]: 'ext-authz' } },
    );
    policy.ack(await policy.next());

    await eventually(
      () => {
        const list = cp.status().nodes as Array<{
          types: Record<string, { ackedVersion?: string; lastNack?: unknown }>;
        }>;
        const settled = (t: { ackedVersion?: string; lastNack?: unknown }) => t.ackedVersion ?? t.lastNack;
        return list.length === 3 && list.every((n) => Object.values(n.types).every(settled));
      },
      10_000,
      'three proxies with their ACKs and NACK',
    );
  }, 60_000);

  afterAll(async () => {
    for (const stream of streams) stream.cancel();
    client?.close();
    await cp?.close();
  });

  const normalise = (text: string) =>
    text
      .replaceAll(url, 'http://127.0.0.1:ADMIN_PORT')
      .replaceAll(unreachable, 'http://127.0.0.1:CLOSED_PORT')
      .replace(/"(connectedAt|ackedAt|at)": "[^"]+"/g, '"$1": "TIMESTAMP"')
      .replace(/"peer": "[^"]+"/g, '"peer": "PEER"');

  const cases: Array<{ name: string; args: () => string[]; code: number }> = [
    { name: 'status-help', args: () => ['status', '--help'], code: 0 },
    { name: 'status', args: () => ['status', url, '--token-file', 'admin-token'], code: 0 },
    { name: 'status-json', args: () => ['status', '--json', url, '--token-file', 'admin-token'], code: 0 },
    { name: 'status-no-token', args: () => ['status', url], code: 1 },
    { name: 'status-wrong-token', args: () => ['status', url, '--token-file', 'wrong-admin-token'], code: 1 },
    { name: 'status-unreachable', args: () => ['status', unreachable, '--token-file', 'admin-token'], code: 1 },
    { name: 'status-no-url', args: () => ['status'], code: 2 },
    { name: 'status-bad-url', args: () => ['status', 'control-plane:18001'], code: 2 },
    { name: 'status-missing-token-file', args: () => ['status', url, '--token-file', 'absent-token'], code: 2 },
  ];

  for (const { name, args, code } of cases) {
    it(`${name}: exits ${code} and prints testdata/out/${name}.txt`, async () => {
      const argv = args();
      const outcome = await sekisho(argv);
      const actual = normalise(
        `$ sekisho ${argv.join(' ')}\n--- exit ${outcome.code}\n--- stdout\n${outcome.stdout}--- stderr\n${outcome.stderr}`,
      );
      const golden = join(testdata, 'out', `${name}.txt`);
      if (update) writeFileSync(golden, actual);
      if (!existsSync(golden)) throw new Error(`no golden file ${golden}: run with UPDATE_GOLDEN=1`);
      expect(outcome.code).toBe(code);
      expect(actual).toBe(readFileSync(golden, 'utf8'));
    }, 90_000);
  }
});
