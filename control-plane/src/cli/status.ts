// `sekisho status URL`: the proxies connected to a running control plane, read from its admin
// API (GET /api/v1/proxies), as a table: node, view, variant, the version ACKed per type, and
// the last NACK.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pushOrder } from '../xds/type-urls';
import { type CliIo, exitCodes, UsageError } from './io';
import { typeName } from './type-names';

export const statusUsage = `Usage: sekisho status URL [--token-file FILE] [--json]

Reads a running control plane's admin API (URL: its admin address, e.g.
http://127.0.0.1:18001) and prints the connected proxies: node id, view, variant (sotw,
delta), the version each resource type is ACKed at (first 8 digits; "-" none yet, "+r" still
carrying a dropped cluster, blank: not subscribed), and the last NACK (type, refused
version, error).

Options:
  --token-file FILE  a file holding the admin API's bearer token (CONTROL_PLANE_ADMIN_TOKEN_FILE)
  --json             the API's answer as JSON instead of a table
  -h, --help         this text

Exit codes: 0 read, 1 the control plane cannot be read (unreachable, refused, an error), 2 usage error.
`;

interface TypeView {
  ackedVersion: string | null;
  lastNack: { version: string; message: string; at: string } | null;
}

interface Proxy {
  stream: number;
  nodeId: string | null;
  view: string | null;
  known: boolean;
  variant: string;
  service: string;
  types: Record<string, TypeView>;
}

export async function statusCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args);
  if (values.help) {
    io.stdout(statusUsage);
    return exitCodes.ok;
  }
  const [url, ...extra] = positionals;
  if (url === undefined) throw new UsageError('status needs the admin API URL', statusUsage);
  if (extra.length > 0) throw new UsageError(`status takes one URL, got also: ${extra.join(' ')}`, statusUsage);
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new UsageError(`URL: not a URL: "${url}" (e.g. http://127.0.0.1:18001)`, statusUsage);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new UsageError(`URL: expected http:// or https://, got "${base.protocol}"`, statusUsage);
  }
  let token: string | undefined;
  if (values['token-file'] !== undefined) {
    const file = resolve(io.cwd, values['token-file']);
    try {
      token = (await readFile(file, 'utf8')).trim();
    } catch (error) {
      throw new UsageError(
        `--token-file: cannot read ${values['token-file']}: ${(error as NodeJS.ErrnoException).code ?? error}`,
        statusUsage,
      );
    }
    if (token === '') throw new UsageError(`--token-file: ${values['token-file']} is empty`, statusUsage);
  }

  const endpoint = new URL('api/v1/proxies', base.href.endsWith('/') ? base : `${base.href}/`);
  let response: Response;
  try {
    response = await fetch(endpoint, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
    io.stderr(`sekisho: status: cannot reach ${endpoint.href}: ${cause}\n`);
    return exitCodes.invalid;
  }
  if (response.status === 401) {
    io.stderr(
      `sekisho: status: ${endpoint.href} refused the request (401 unauthorized): ${
        token === undefined ? 'give --token-file' : 'wrong token'
      }\n`,
    );
    return exitCodes.invalid;
  }
  const text = await response.text();
  if (!response.ok) {
    io.stderr(`sekisho: status: ${endpoint.href} answered ${response.status}: ${text.slice(0, 200)}\n`);
    return exitCodes.invalid;
  }
  let proxies: Proxy[];
  try {
    proxies = (JSON.parse(text) as { proxies: Proxy[] }).proxies;
    if (!Array.isArray(proxies)) throw new Error('no proxies array');
  } catch (error) {
    io.stderr(`sekisho: status: ${endpoint.href} is not a Sekisho admin API: ${(error as Error).message}\n`);
    return exitCodes.invalid;
  }
  if (values.json) {
    io.stdout(`${JSON.stringify({ url: base.href, proxies }, null, 2)}\n`);
    return exitCodes.ok;
  }
  io.stdout(table(base.href, proxies));
  return exitCodes.ok;
}

const shortVersion = (version: string | null) =>
  version === null
    ? '-'
    : `${version.replace(/\+retained$/, '').slice(0, 8)}${version.endsWith('+retained') ? '+r' : ''}`;

/** The table: one row per proxy, ordered by view, node id, stream; a column per type any proxy has. */
export function table(url: string, proxies: Proxy[]): string {
  const count = `${proxies.length} ${proxies.length === 1 ? 'proxy' : 'proxies'} connected`;
  if (proxies.length === 0) return `${url}: ${count}\n`;
  const shortOrder = pushOrder.map(typeName);
  const present = new Set(proxies.flatMap((p) => Object.keys(p.types)));
  const types = [
    ...shortOrder.filter((t) => present.has(t)),
    ...[...present].filter((t) => !shortOrder.includes(t)).sort(),
  ];
  const sorted = [...proxies].sort(
    (a, b) =>
      (a.view ?? '~').localeCompare(b.view ?? '~') ||
      (a.nodeId ?? '').localeCompare(b.nodeId ?? '') ||
      a.stream - b.stream,
  );
  const header = ['NODE', 'VIEW', 'VARIANT', ...types.map((t) => t.toUpperCase()), 'LAST NACK'];
  const rows = sorted.map((p) => {
    const nacks = types.flatMap((t) => {
      const nack = p.types[t]?.lastNack;
      return nack ? [`${t}@${shortVersion(nack.version)}: ${nack.message.replace(/\s+/g, ' ').trim()}`] : [];
    });
    return [
      p.nodeId ?? '(no node yet)',
      p.view ?? (p.known ? '-' : '(unknown node)'),
      p.service === 'ads' ? p.variant : `${p.variant} (${p.service})`,
      ...types.map((t) => (p.types[t] ? shortVersion(p.types[t].ackedVersion) : '')),
      nacks.length === 0 ? '-' : nacks.join('; '),
    ];
  });
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => (row[i] ?? '').length)));
  const line = (row: string[]) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return `${url}: ${count}\n${[header, ...rows].map(line).join('\n')}\n`;
}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: {
        'token-file': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, statusUsage);
  }
}
