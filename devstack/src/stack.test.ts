import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { freePort, isPortFree, liveProcesses } from './processes';
import { startStack } from './stack';

// What startStack refuses before it starts anything; starting it is test/gateway.e2e.test.ts's job.

async function definitionFile(ports: { gateway: number; customer: number; extAuthz: number; rateLimit: number }) {
  const dir = await mkdtemp(join(tmpdir(), 'sekisho-stack-'));
  const file = join(dir, 'gateway.yaml');
  await writeFile(
    file,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: ports.gateway } },
      identity: { firebase: { projectId: 'demo-stack' }, groupClaim: 'tier', groups: { basic: ['read:own_profile'] } },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${ports.extAuthz}` },
        rateLimit: { address: `127.0.0.1:${ports.rateLimit}` },
      },
      services: { customer: { endpoints: [`127.0.0.1:${ports.customer}`] } },
      routes: [{ match: 'GET /api/v1/profile', to: 'customer', require: ['read:own_profile'] }],
    }),
  );
  return { dir, file };
}

describe('startStack', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  it('refuses to start when a port it must use is taken, naming it, and starts nothing', async () => {
    const [gateway, customer, extAuthz, rateLimit] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    const { dir, file } = await definitionFile({ gateway, customer, extAuthz, rateLimit });
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(gateway, '127.0.0.1', resolve));
    cleanup.push(() => new Promise((resolve) => blocker.close(() => resolve())));

    await expect(startStack({ definitionFile: file })).rejects.toThrow(
      `stack: ports already in use: listeners.http.port = ${gateway}`,
    );
    expect(liveProcesses()).toEqual([]);
    expect(await isPortFree(customer)).toBe(true); // no demo upstream was left behind
  });

  it('refuses an invalid definition, listing the offending fields', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sekisho-stack-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'gateway.yaml');
    await writeFile(file, stringify({ listeners: { http: { port: 'eighty' } } }));
    await expect(startStack({ definitionFile: file })).rejects.toThrow(/is invalid:\n[\s\S]*listeners\.http\.port/);
  });
});
