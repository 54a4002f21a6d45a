import { readFileSync } from 'node:fs';
import * as z from 'zod';
import { ConfigError, envEnum } from './config';

// How a service reaches Redis, from its `<PREFIX>_REDIS_*` variables: standalone, Sentinel or
// Cluster, TLS (rediss://) and ACL credentials. One parser for every service (the rate-limit
// service, ext-authz, the threat detector), so a variable means the same thing in each and
// every problem is named by the service's own variable. The clients are built by each
// service (their timeouts and queues differ); redisNodeOptions gives them the shared part.

export type RedisMode = 'standalone' | 'sentinel' | 'cluster';

export interface RedisEndpoint {
  readonly host: string;
  readonly port: number;
}

/** How to reach Redis, checked and complete: what the client is built from. */
export interface RedisTopology {
  readonly mode: RedisMode;
  /** standalone: the server; sentinel: the sentinels; cluster: the seed nodes. */
  readonly endpoints: readonly RedisEndpoint[];
  /** standalone only; 0 otherwise. */
  readonly db: number;
  readonly username?: string;
  readonly password?: string;
  readonly sentinel?: { readonly masterName: string; readonly username?: string; readonly password?: string };
  /** Present for rediss://: PEM contents read at start-up. */
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string; readonly serverName?: string };
}

/** The raw values of a service's `<PREFIX>_REDIS_*` variables (after its schema parsed them). */
export interface RedisSettings {
  /** standalone: one URL; sentinel: the sentinels' URLs; cluster: seed nodes' URLs (comma-separated). */
  url: string;
  mode: RedisMode;
  sentinelMaster?: string | undefined;
  username?: string | undefined;
  password?: string | undefined;
  sentinelUsername?: string | undefined;
  sentinelPassword?: string | undefined;
  tlsCaFile?: string | undefined;
  tlsCertFile?: string | undefined;
  tlsKeyFile?: string | undefined;
  tlsServerName?: string | undefined;
}

/** The variable of each setting for a prefix: redisVariables('THREAT').url === 'THREAT_REDIS_URL'. */
export function redisVariables<P extends string>(prefix: P) {
  return {
    url: `${prefix}_REDIS_URL`,
    mode: `${prefix}_REDIS_MODE`,
    sentinelMaster: `${prefix}_REDIS_SENTINEL_MASTER`,
    username: `${prefix}_REDIS_USERNAME`,
    password: `${prefix}_REDIS_PASSWORD`,
    sentinelUsername: `${prefix}_REDIS_SENTINEL_USERNAME`,
    sentinelPassword: `${prefix}_REDIS_SENTINEL_PASSWORD`,
    tlsCaFile: `${prefix}_REDIS_TLS_CA_FILE`,
    tlsCertFile: `${prefix}_REDIS_TLS_CERT_FILE`,
    tlsKeyFile: `${prefix}_REDIS_TLS_KEY_FILE`,
    tlsServerName: `${prefix}_REDIS_TLS_SERVER_NAME`,
  } as const;
}

type OptionalSetting =
  | 'SENTINEL_MASTER'
  | 'USERNAME'
  | 'PASSWORD'
  | 'SENTINEL_USERNAME'
  | 'SENTINEL_PASSWORD'
  | 'TLS_CA_FILE'
  | 'TLS_CERT_FILE'
  | 'TLS_KEY_FILE'
  | 'TLS_SERVER_NAME';

/**
 * The zod fields of `<PREFIX>_REDIS_MODE` and the optional `<PREFIX>_REDIS_*` settings (the
 * URL is the service's own: its default differs), for a service's configuration schema:
 *   MODE               standalone (default) | the other `modes`
 *   SENTINEL_MASTER    sentinel: the name the sentinels monitor
 *   USERNAME/PASSWORD  the data nodes' ACL user and password (else those of the URL). Never logged.
 *   SENTINEL_USERNAME/SENTINEL_PASSWORD  the sentinels' own, when they require them
 *   TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE  rediss:// only: PEM files (CA; client certificate and key)
 *   TLS_SERVER_NAME    rediss:// only: the name the certificates carry, when not the URL's host
 */
export function redisEnvFields<P extends string, const M extends readonly [RedisMode, ...RedisMode[]]>(
  prefix: P,
  modes: M,
) {
  const optional = [
    'SENTINEL_MASTER',
    'USERNAME',
    'PASSWORD',
    'SENTINEL_USERNAME',
    'SENTINEL_PASSWORD',
    'TLS_CA_FILE',
    'TLS_CERT_FILE',
    'TLS_KEY_FILE',
    'TLS_SERVER_NAME',
  ] as const satisfies readonly OptionalSetting[];
  return {
    [`${prefix}_REDIS_MODE`]: envEnum(modes, 'standalone' as M[number]),
    ...Object.fromEntries(optional.map((name) => [`${prefix}_REDIS_${name}`, z.string().min(1).optional()])),
  } as Record<`${P}_REDIS_MODE`, ReturnType<typeof envEnum<M>>> &
    Record<`${P}_REDIS_${OptionalSetting}`, z.ZodOptional<z.ZodString>>;
}

/** Reads the settings for `prefix` out of a parsed configuration (or an environment) whose keys are the variables. */
export function redisSettingsOf(config: object, prefix: string, url: string): RedisSettings {
  const names = redisVariables(prefix);
  const values = config as Record<string, unknown>;
  // Empty counts as unset, as in loadConfig (so the raw environment may be given too).
  const text = (key: string) =>
    typeof values[key] === 'string' && values[key] !== '' ? (values[key] as string) : undefined;
  return {
    url,
    mode: (text(names.mode) ?? 'standalone') as RedisMode,
    sentinelMaster: text(names.sentinelMaster),
    username: text(names.username),
    password: text(names.password),
    sentinelUsername: text(names.sentinelUsername),
    sentinelPassword: text(names.sentinelPassword),
    tlsCaFile: text(names.tlsCaFile),
    tlsCertFile: text(names.tlsCertFile),
    tlsKeyFile: text(names.tlsKeyFile),
    tlsServerName: text(names.tlsServerName),
  };
}

type Problem = { variable: string; message: string };

/** decodeURIComponent that reports (never throws on) malformed input such as `%zz`. */
function decoded(text: string, onError: () => void): string {
  try {
    return decodeURIComponent(text);
  } catch {
    onError();
    return '';
  }
}

// A URL as the operator sees it in an error: never its password.
const masked = (url: string) => JSON.stringify(url.replace(/\/\/[^/@\s]*@/, '//***@'));

/**
 * `<PREFIX>_REDIS_*` → a RedisTopology, every problem named by its variable (and every problem
 * at once, in a ConfigError). Credentials never appear in a message. `modes`: the modes the
 * service supports (another one is refused with `unsupported`, the reason).
 */
export function resolveRedisTopology(
  settings: RedisSettings,
  prefix: string,
  opts: { modes?: readonly RedisMode[]; unsupported?: string } = {},
): RedisTopology {
  const v = redisVariables(prefix);
  const problems: Problem[] = [];
  const problem = (variable: string, message: string) => problems.push({ variable, message });
  const { mode } = settings;
  const urlVar = v.url;
  const defaultPort = mode === 'sentinel' ? 26379 : 6379;
  const modes = opts.modes ?? ['standalone', 'sentinel', 'cluster'];
  if (!modes.includes(mode))
    problem(
      v.mode,
      `${mode} is not supported here (${modes.join(' or ')})${opts.unsupported ? `: ${opts.unsupported}` : ''}`,
    );

  const entries = settings.url.split(',').map((e) => e.trim());
  if (mode === 'standalone' && entries.length > 1) {
    const several = (['cluster', 'sentinel'] as const).filter((m) => modes.includes(m)).join(' or ');
    problem(urlVar, `one URL expected in standalone mode (set ${v.mode}=${several} for several)`);
  }
  const parsedUrls = entries.flatMap((entry, i) => {
    const where = entries.length > 1 ? `entry #${i + 1} (${masked(entry)})` : masked(entry);
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      problem(urlVar, `${where} is not a URL like redis://host:6379`);
      return [];
    }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
      problem(urlVar, `${where}: the scheme must be redis:// or rediss:// (TLS), not ${url.protocol}//`);
      return [];
    }
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (host === '') problem(urlVar, `${where} has no host`);
    if (url.search !== '' || url.hash !== '') problem(urlVar, `${where}: query and fragment are not supported`);
    const path = url.pathname.replace(/^\//, '');
    let db = 0;
    if (path !== '') {
      if (!/^\d{1,2}$/.test(path)) problem(urlVar, `${where}: the path must be a database number like /2`);
      else if (mode !== 'standalone') problem(urlVar, `${where}: a database number is for standalone mode only`);
      else db = Number(path);
    }
    if (mode === 'sentinel' && (url.username !== '' || url.password !== ''))
      problem(
        urlVar,
        `${where}: in sentinel mode, give credentials in ${v.password} (data nodes) and ${v.sentinelPassword} (sentinels), not in the URL`,
      );
    return [
      {
        tls: url.protocol === 'rediss:',
        endpoint: { host, port: url.port === '' ? defaultPort : Number(url.port) },
        db,
        username: decoded(url.username, () => problem(urlVar, `${where}: the user name is not valid percent-encoding`)),
        password: decoded(url.password, () => problem(urlVar, `${where}: the password is not valid percent-encoding`)),
      },
    ];
  });

  const tls = parsedUrls.some((u) => u.tls);
  if (tls && parsedUrls.some((u) => !u.tls))
    problem(urlVar, 'mixes redis:// and rediss:// URLs; use one scheme for all');
  const credentials = new Set(parsedUrls.map((u) => `${u.username}\n${u.password}`));
  if (credentials.size > 1) problem(urlVar, 'the URLs carry different credentials; give the same to all, or none');
  let username = parsedUrls[0]?.username || undefined;
  let password = parsedUrls[0]?.password || undefined;
  if (settings.password !== undefined || settings.username !== undefined) {
    if (password !== undefined || username !== undefined)
      problem(v.password, `credentials are given in ${urlVar} as well; give them in one place`);
    username = settings.username;
    password = settings.password;
  }
  if (username !== undefined && password === undefined)
    problem(v.username, `an ACL user needs a password (${v.password})`);

  const masterName = settings.sentinelMaster;
  if (mode === 'sentinel' && masterName === undefined)
    problem(v.sentinelMaster, `required with ${v.mode}=sentinel: the name the sentinels monitor`);
  for (const key of ['sentinelMaster', 'sentinelUsername', 'sentinelPassword'] as const) {
    if (mode !== 'sentinel' && settings[key] !== undefined)
      problem(v[key], `applies only with ${v.mode}=sentinel (the mode is ${mode})`);
  }
  if (settings.sentinelUsername !== undefined && settings.sentinelPassword === undefined)
    problem(v.sentinelUsername, `an ACL user needs a password (${v.sentinelPassword})`);

  const readPem = (key: 'tlsCaFile' | 'tlsCertFile' | 'tlsKeyFile') => {
    const file = settings[key];
    if (file === undefined) return undefined;
    if (!tls) {
      problem(v[key], `applies only to rediss:// URLs (${urlVar} uses redis://)`);
      return undefined;
    }
    try {
      const text = readFileSync(file, 'utf8');
      if (!text.includes('-----BEGIN ')) problem(v[key], `${JSON.stringify(file)} is not a PEM file`);
      return text;
    } catch (error) {
      problem(v[key], `cannot read ${JSON.stringify(file)}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
      return undefined;
    }
  };
  const ca = readPem('tlsCaFile');
  const cert = readPem('tlsCertFile');
  const key = readPem('tlsKeyFile');
  if ((settings.tlsCertFile === undefined) !== (settings.tlsKeyFile === undefined))
    problem(v.tlsCertFile, `a client certificate needs its key (${v.tlsKeyFile}), and a key its certificate`);
  const serverName = settings.tlsServerName;
  if (serverName !== undefined && !tls)
    problem(v.tlsServerName, `applies only to rediss:// URLs (${urlVar} uses redis://)`);

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    mode,
    endpoints: parsedUrls.map((u) => u.endpoint),
    db: parsedUrls[0]?.db ?? 0,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(mode === 'sentinel' && masterName !== undefined
      ? {
          sentinel: {
            masterName,
            ...(settings.sentinelUsername !== undefined ? { username: settings.sentinelUsername } : {}),
            ...(settings.sentinelPassword !== undefined ? { password: settings.sentinelPassword } : {}),
          },
        }
      : {}),
    ...(tls ? { tls: { ca, cert, key, serverName } } : {}),
  };
}

/** Node TLS options for rediss:// (undefined for redis://). */
function redisTlsOptions(
  topology: RedisTopology,
): { ca?: string; cert?: string; key?: string; servername?: string } | undefined {
  const { tls } = topology;
  if (!tls) return undefined;
  return {
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}),
    ...(tls.serverName ? { servername: tls.serverName } : {}),
  };
}

/**
 * The ioredis options (a plain object, for `new Redis(...)`) that say where and how to connect
 * for a standalone or Sentinel topology: host or sentinels and master name, database,
 * credentials of the data nodes and of the sentinels, TLS to both. The caller adds its own
 * timeouts, queueing and retry strategy. A cluster is built from endpoints and these
 * credentials by the caller (`new Cluster(...)`, redisOptions: redisNodeOptions(...) minus host).
 */
export function redisNodeOptions(topology: RedisTopology): Record<string, unknown> {
  const tls = redisTlsOptions(topology);
  const common = {
    ...(topology.username !== undefined ? { username: topology.username } : {}),
    ...(topology.password !== undefined ? { password: topology.password } : {}),
    ...(tls ? { tls } : {}),
  };
  if (topology.mode === 'sentinel' && topology.sentinel) {
    const { sentinel } = topology;
    return {
      ...common,
      sentinels: topology.endpoints.map((e) => ({ host: e.host, port: e.port })),
      name: sentinel.masterName,
      role: 'master',
      db: topology.db,
      ...(sentinel.username !== undefined ? { sentinelUsername: sentinel.username } : {}),
      ...(sentinel.password !== undefined ? { sentinelPassword: sentinel.password } : {}),
      ...(tls ? { enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      // No failoverDetector: ioredis 5's detector disconnects the connector when a sentinel
      // announces +switch-master, and when that lands while the client is already reconnecting
      // (the master was killed, the reconnect is asking a sentinel) the connect in progress
      // fails with "Connection is closed." and the client ends for good: every later command
      // fails with it. Seen under load in the Sentinel tests (a killed TLS master: 0 decisions
      // in 60 s after the promotion). Without it the client still follows a failover: a killed
      // master drops the connection (the reconnect asks the sentinels), a demoted one answers
      // READONLY (reconnectOnError) and the sentinels kill its clients' connections.
      failoverDetector: false,
    };
  }
  if (topology.mode === 'cluster') return common;
  const endpoint = topology.endpoints[0];
  if (!endpoint) throw new Error('a standalone Redis topology needs one endpoint');
  return { ...common, host: endpoint.host, port: endpoint.port, db: topology.db };
}
