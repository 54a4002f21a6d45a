import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('./main.ts', import.meta.url));

function run(env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', main], {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  return { child, output: () => output };
}

describe('demo-upstream main', () => {
  it('serves with the configured name and exits 0 on SIGTERM', async () => {
    const { child, output } = run({ DEMO_UPSTREAM_NAME: 'appointment', DEMO_UPSTREAM_PORT: '0' });
    try {
      await expect.poll(() => /"url":"(http:[^"]+)"/.exec(output())?.[1], { timeout: 15_000 }).toBeDefined();
      const url = /"url":"(http:[^"]+)"/.exec(output())?.[1];
      expect(await (await fetch(`${url}/health`)).json()).toEqual({ status: 'ok', service: 'appointment' });
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
      expect(output()).toContain('shutdown_complete');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('exits 1 with a startup_failed record when its port is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const { child, output } = run({ DEMO_UPSTREAM_PORT: String((blocker.address() as AddressInfo).port) });
      const [code] = await once(child, 'exit');
      expect(code).toBe(1);
      expect(output()).toContain('"event_type":"startup_failed"');
      expect(output()).toContain('EADDRINUSE');
    } finally {
      blocker.close();
    }
  });

  it('stops with a message naming the variable when the configuration is invalid', async () => {
    const { child, output } = run({ DEMO_UPSTREAM_PORT: 'eighty' });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(/demo-upstream: invalid configuration:\n\s+DEMO_UPSTREAM_PORT: .*"eighty"/);
  });
});
