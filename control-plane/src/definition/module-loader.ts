// Loads a TS/JS definition module in a worker thread that ends once the value is read. The ESM
// cache of a thread keeps every module it ever imported, so importing each edited version in
// the control plane's own thread (a `?v=` query per version) kept one module per edit for the
// life of the process. A worker's modules go with the worker; the value comes back by
// structured clone, so the definition must be plain data (which the schema requires anyway).

import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

/** Longer than any definition module should take; a module that never settles is an error, not a hang. */
const defaultTimeoutMs = 30_000;

// CommonJS (an eval'd worker); tsx's hooks are registered for this thread only.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const { register } = await import(workerData.tsxApi);
  register();
  const namespace = await import(workerData.url);
  // A .ts file outside a "type": "module" package is compiled to CommonJS: its default export
  // is then module.exports.default.
  const cjs = namespace.default;
  const module = cjs !== null && typeof cjs === 'object' && cjs.__esModule === true ? cjs : namespace;
  if (module.default === undefined) {
    return { error: 'has no default export; write \`export default defineGateway({ ... })\`' };
  }
  try {
    parentPort.postMessage({ value: module.default });
    return undefined;
  } catch (error) {
    return { error: 'its default export is not plain data (' + (error && error.message) + ')' };
  }
})().then(
  (result) => { if (result) parentPort.postMessage(result); },
  (error) => { parentPort.postMessage({ error: error instanceof Error ? error.message : String(error) }); },
);
`;

/** The default export of the module at `path`; rejects with a message fit for a FieldError. */
export function loadModuleDefault(path: string, timeoutMs = defaultTimeoutMs): Promise<unknown> {
  return new Promise((resolvePromise, reject) => {
    const worker = new Worker(workerSource, {
      eval: true,
      workerData: { url: pathToFileURL(path).href, tsxApi: import.meta.resolve('tsx/esm/api') },
      // The definition's own console output still shows; nothing else is shared.
      stdout: false,
      stderr: false,
    });
    let settled = false;
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // terminate() frees the thread's heap, its module cache with it.
      void worker.terminate();
      outcome();
    };
    const timer = setTimeout(
      () => finish(() => reject(new Error(`did not finish loading within ${timeoutMs} ms`))),
      timeoutMs,
    );
    worker.once('message', (message: { value?: unknown; error?: string }) => {
      if (message.error !== undefined) finish(() => reject(new Error(message.error)));
      else finish(() => resolvePromise(message.value));
    });
    worker.once('error', (error) => finish(() => reject(error)));
    worker.once('exit', (code) =>
      finish(() => reject(new Error(`loader thread exited (code ${code}) before the definition was read`))),
    );
  });
}
