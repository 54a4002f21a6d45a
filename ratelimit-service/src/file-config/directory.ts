import { createHash } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '@sekisho/service-kit/logger';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type CompiledFileDomain, compileConfigFile } from './compile';
import { ConfigFileError, parseConfigFile } from './parse';

// The directory of envoyproxy/ratelimit files (RATELIMIT_CONFIG_DIR), one domain per file,
// watched: fs.watch for prompt reloads, and a poll because fs.watch misses changes on some
// mounts. A Kubernetes ConfigMap volume swaps its `..data` symlink to a new directory; the
// visible `name.yaml` links then read the new content, which the scan compares by text, so
// it needs no special case. A refused file keeps its last good configuration in force.

const configFile = /\.ya?ml$/;

interface Loaded {
  readonly domain: string;
  readonly compiled: CompiledFileDomain;
  readonly version: string;
  readonly loadedAt: string;
}

interface FileState {
  text: string;
  good: Loaded | undefined;
  error: { path: string; reason: string; since: string; retry: boolean } | undefined;
}

export interface ConfigDirectoryStatus {
  path: string;
  readable: boolean;
  domains: Array<{ domain: string; file: string; version: string; rules: number; loaded_at: string }>;
  errors: Array<{ file: string; path: string; reason: string; since: string; in_force: string | null }>;
}

export interface ConfigDirectory {
  /** The file domains in force; the map is replaced, never changed, so a caller may keep it for one call. */
  domains(): ReadonlyMap<string, CompiledFileDomain>;
  /** Reads the directory now (the watcher and the poll call it too). */
  rescan(): Promise<void>;
  status(): ConfigDirectoryStatus;
  close(): void;
}

/** Reads the directory once (it must exist: the variable naming it is then wrong) and watches it. */
export async function openConfigDirectory(opts: {
  dir: string;
  pollIntervalMs: number;
  /** Domains another source owns (the control plane's): a file naming one is refused. */
  reservedDomains: readonly string[];
  logger: Logger;
  registry: Registry;
}): Promise<ConfigDirectory> {
  const { dir, logger } = opts;
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new Error(`RATELIMIT_CONFIG_DIR: ${dir} is not a readable directory`);

  const registers = [opts.registry];
  const loads = new Counter({
    name: 'sekisho_ratelimit_config_file_loads_total',
    help: 'Configuration file loads by result (loaded, rejected).',
    labelNames: ['result'] as const,
    registers,
  });
  const fileError = new Gauge({
    name: 'sekisho_ratelimit_config_file_error',
    aggregator: 'max',
    help: '1 while a configuration file is refused (its last good configuration stays in force).',
    labelNames: ['file'] as const,
    registers,
  });
  const domainInfo = new Gauge({
    name: 'sekisho_ratelimit_config_domain_info',
    aggregator: 'first',
    help: 'The file domains in force: 1 for each domain, its file and version.',
    labelNames: ['domain', 'file', 'version'] as const,
    registers,
  });

  const files = new Map<string, FileState>();
  let domains: ReadonlyMap<string, CompiledFileDomain> = new Map();
  let readable = true;

  const publish = () => {
    const next = new Map<string, CompiledFileDomain>();
    domainInfo.reset();
    for (const [file, state] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
      if (!state.good) continue;
      next.set(state.good.domain, state.good.compiled);
      domainInfo.set({ domain: state.good.domain, file, version: state.good.version }, 1);
    }
    domains = next;
  };

  const refuse = (file: string, state: FileState, error: ConfigFileError, retry = false) => {
    const since = state.error && state.error.reason === error.reason ? state.error.since : new Date().toISOString();
    state.error = { path: error.path, reason: error.reason, since, retry };
    loads.inc({ result: 'rejected' });
    fileError.set({ file }, 1);
    logger.error(
      {
        category: 'technical',
        event_type: 'config_file_rejected',
        file,
        path: error.path,
        reason: error.reason,
        domain_in_force: state.good?.domain ?? null,
      },
      `configuration file refused: ${error.message}${state.good ? ' (its last good configuration stays in force)' : ''}`,
    );
  };

  const load = (file: string, text: string, state: FileState) => {
    let compiled: CompiledFileDomain;
    try {
      compiled = compileConfigFile(parseConfigFile(file, text));
    } catch (error) {
      // Whatever the text, a file is refused, never a crash of the scan.
      const refusal =
        error instanceof ConfigFileError
          ? error
          : new ConfigFileError(file, '', `could not be loaded: ${String(error)}`);
      return refuse(file, state, refusal);
    }
    const { domain } = compiled;
    if (opts.reservedDomains.includes(domain)) {
      return refuse(
        file,
        state,
        new ConfigFileError(file, 'domain', `domain "${domain}" belongs to the control plane's policy`),
      );
    }
    const owner = [...files].find(([other, s]) => other !== file && s.good?.domain === domain)?.[0];
    if (owner) {
      // Retried on later scans: the other file may change or go away.
      return refuse(
        file,
        state,
        new ConfigFileError(file, 'domain', `domain "${domain}" is already in ${owner}`),
        true,
      );
    }
    const version = createHash('sha256').update(text).digest('hex').slice(0, 12);
    state.good = { domain, compiled, version, loadedAt: new Date().toISOString() };
    state.error = undefined;
    loads.inc({ result: 'loaded' });
    fileError.set({ file }, 0);
    logger.info(
      {
        category: 'technical',
        event_type: 'config_file_loaded',
        file,
        domain,
        version,
        rules: compiled.limits.length,
      },
      `configuration file loaded: ${file} (domain ${domain})`,
    );
  };

  const scan = async () => {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => !n.startsWith('.') && configFile.test(n)).sort();
    } catch (error) {
      if (readable)
        logger.error(
          { category: 'technical', event_type: 'config_dir_unreadable', dir, error_details: String(error) },
          'configuration directory unreadable; the configuration in force stays',
        );
      readable = false;
      return;
    }
    readable = true;
    const texts = await Promise.all(
      names.map((n) =>
        readFile(join(dir, n), 'utf8').then(
          (text) => ({ n, text }),
          // Gone between readdir and read (a swap in progress): the next scan sees it.
          () => undefined,
        ),
      ),
    );
    let changed = false;
    const retries: Array<{ n: string; text: string; state: FileState }> = [];
    for (const entry of texts) {
      if (!entry) continue;
      const { n, text } = entry;
      let state = files.get(n);
      if (!state) {
        state = { text, good: undefined, error: undefined };
        files.set(n, state);
      } else if (state.text === text) {
        if (state.error?.retry) retries.push({ n, text, state });
        continue;
      }
      changed = true;
      state.text = text;
      load(n, text, state);
    }
    for (const file of [...files.keys()]) {
      if (names.includes(file)) continue;
      changed = true;
      files.delete(file);
      fileError.remove({ file });
      logger.info(
        { category: 'technical', event_type: 'config_file_removed', file },
        `configuration file removed: ${file}`,
      );
    }
    // A file refused for naming another file's domain is tried again once something changed.
    if (changed) for (const { n, text, state } of retries) load(n, text, state);
    publish();
  };

  // One scan at a time; a change during a scan schedules exactly one more.
  let running: Promise<void> | undefined;
  let again = false;
  const rescan = async (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await scan();
        } while (again);
      } finally {
        running = undefined;
      }
    })();
    return running;
  };
  const rescanLogged = () => {
    rescan().catch((error: unknown) =>
      logger.error(
        { category: 'technical', event_type: 'config_dir_scan_failed', error_details: String(error) },
        'configuration directory scan failed',
      ),
    );
  };

  await rescan();

  let debounce: NodeJS.Timeout | undefined;
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, () => {
      clearTimeout(debounce);
      debounce = setTimeout(rescanLogged, 50);
    });
    // A watcher that fails (the directory replaced, inotify limits) leaves the poll.
    watcher.on('error', () => watcher?.close());
  } catch {
    watcher = undefined;
  }
  const poll = setInterval(rescanLogged, opts.pollIntervalMs);

  return {
    domains: () => domains,
    rescan,
    status: () => ({
      path: dir,
      readable,
      domains: [...files]
        .filter(([, s]) => s.good && domains.get(s.good.domain) === s.good.compiled)
        .map(([file, s]) => {
          const good = s.good as Loaded;
          return {
            domain: good.domain,
            file,
            version: good.version,
            rules: good.compiled.limits.length,
            loaded_at: good.loadedAt,
          };
        }),
      errors: [...files]
        .filter(([, s]) => s.error)
        .map(([file, s]) => {
          const error = s.error as NonNullable<FileState['error']>;
          return {
            file,
            path: error.path,
            reason: error.reason,
            since: error.since,
            in_force: s.good?.version ?? null,
          };
        }),
    }),
    close: () => {
      clearTimeout(debounce);
      clearInterval(poll);
      watcher?.close();
    },
  };
}
