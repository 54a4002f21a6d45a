import { createRequire } from 'node:module';
import { freePort } from './processes';

// The Firebase Auth emulator of the `firebase-tools` npm package, run in this process on a
// free loopback port (pure JavaScript, offline, a `demo-` project). In-process rather than
// through the `firebase` CLI, which would also fetch its news and update checks from the
// network. firebase-admin talks to it when FIREBASE_AUTH_EMULATOR_HOST is its `host`.

export interface AuthEmulator {
  /** host:port, the value of FIREBASE_AUTH_EMULATOR_HOST. */
  readonly host: string;
  readonly projectId: string;
  /** The emulator's REST base, e.g. `${url}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=any`. */
  readonly url: string;
  stop(): Promise<void>;
}

interface EmulatorModule {
  AuthEmulator: new (args: {
    host: string;
    port: number;
    projectId: string;
    singleProjectMode: number;
  }) => { start(): Promise<void>; stop(): Promise<void> };
  SingleProjectMode: { NO_WARNING: number };
}

/** `port` 0 or omitted: a free one. */
export async function startAuthEmulator(opts: { projectId: string; port?: number }): Promise<AuthEmulator> {
  if (!opts.projectId.startsWith('demo-')) {
    throw new Error(
      `startAuthEmulator: use a demo- project id (got ${opts.projectId}): nothing may reach a real project`,
    );
  }
  let module: EmulatorModule;
  try {
    module = createRequire(import.meta.url)('firebase-tools/lib/emulator/auth/index.js') as EmulatorModule;
  } catch (error) {
    throw new Error(
      `the Firebase Auth emulator needs the firebase-tools npm package (a dependency of devstack: run \`npm ci\`): ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const port = opts.port || (await freePort());
  const emulator = new module.AuthEmulator({
    host: '127.0.0.1',
    port,
    projectId: opts.projectId,
    singleProjectMode: module.SingleProjectMode.NO_WARNING,
  });
  await emulator.start();
  return {
    host: `127.0.0.1:${port}`,
    projectId: opts.projectId,
    url: `http://127.0.0.1:${port}`,
    stop: () => emulator.stop(),
  };
}
