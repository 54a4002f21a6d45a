// Headless Chromium for the browser tests: CHROMIUM_BIN, else `chromium` on PATH (Debian's
// package, which `npm run setup` installs). No download: the browser is a real system package.
import { findOnPath, isExecutable } from './host';

export const chromiumInstallHint =
  "Chromium is needed for the browser tests: run `npm run setup` (as root on Debian/Ubuntu it runs apt-get install chromium), or install Debian's chromium package yourself (sudo apt-get install chromium), or set CHROMIUM_BIN to a Chromium executable.";

/** The Chromium executable, or undefined when this machine has none. */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env.CHROMIUM_BIN;
  if (fromEnv) return isExecutable(fromEnv) ? fromEnv : undefined;
  return findOnPath('chromium', env.PATH ?? '');
}

/**
 * Flags for a quiet, throw-away headless Chromium: no sandbox (tests run as root in
 * containers), no GPU, no background traffic to Google, and no QUIC.
 */
export const chromiumTestFlags = [
  '--no-sandbox',
  '--headless',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
] as const;
