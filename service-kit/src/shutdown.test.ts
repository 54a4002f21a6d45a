import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger';
import { installShutdown, type ShutdownStep } from './shutdown';

// Signals come from an EventEmitter and exit() is recorded, so the test process itself
// is never signalled or ended.
function harness(steps: ShutdownStep[], deadlineMs = 1_000) {
  const signals = new EventEmitter();
  const exits: number[] = [];
  let exited: (code: number) => void = () => {};
  const firstExit = new Promise<number>((resolve) => {
    exited = resolve;
  });
  const shutdown = installShutdown(createLogger('test', { level: 'silent' }), steps, {
    deadlineMs,
    signals,
    exit: (code) => {
      exits.push(code);
      exited(code);
    },
  });
  return { signal: (name: NodeJS.Signals) => signals.emit(name, name), begin: shutdown.begin, exits, firstExit };
}

describe('installShutdown', () => {
  it('runs every step in order on SIGTERM, past a failing one, then exits 0', async () => {
    const ran: string[] = [];
    const step = (name: string, fail = false): ShutdownStep => ({
      name,
      run: async () => {
        ran.push(name);
        if (fail) throw new Error(`${name} failed`);
      },
    });
    const { signal, firstExit } = harness([step('grpc'), step('subscription', true), step('admin')]);
    signal('SIGTERM');
    expect(await firstExit).toBe(0);
    expect(ran).toEqual(['grpc', 'subscription', 'admin']);
  });

  it('exits 1 at once on a second signal while the steps still run', async () => {
    const { signal, exits, firstExit } = harness([{ name: 'drain', run: () => new Promise<void>(() => {}) }]);
    signal('SIGINT');
    signal('SIGINT');
    expect(await firstExit).toBe(1);
    expect(exits).toEqual([1]);
  });

  it('exits 1 when a step hangs past the deadline', async () => {
    const { signal, firstExit } = harness([{ name: 'hangs', run: () => new Promise<void>(() => {}) }], 50);
    signal('SIGTERM');
    expect(await firstExit).toBe(1);
  });

  it("runs the steps once when a worker's primary asks and the same Ctrl-C reaches the worker too", async () => {
    const ran: string[] = [];
    let release = () => {};
    const drained = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { signal, begin, exits, firstExit } = harness([
      {
        name: 'drain',
        run: async () => {
          ran.push('drain');
          await drained;
        },
      },
    ]);
    begin('SIGTERM');
    signal('SIGINT');
    begin('SIGTERM');
    release();
    expect(await firstExit).toBe(0);
    expect(exits).toEqual([0]);
    expect(ran).toEqual(['drain']);
  });
});
