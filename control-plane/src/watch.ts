import { type FSWatcher, watch as fsWatch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from '@sekisho/service-kit/logger';
import { Counter, Histogram, type Registry } from 'prom-client';
import { type CompileResult, compileDefinitionFile, type FieldError } from './definition/load';
import type { GatewayIR } from './ir/types';
import type { LastGoodStore } from './last-good';
import type { WorkloadSecrets } from './mesh/contract';
import { withCurrentWorkloadSecrets, withoutWorkloadKeys } from './mesh/saved-secrets';
import { defaultGroup, type SnapshotCache, sortByPushOrder } from './xds/cache';
import type { ResourcesByType } from './xds/resources';
import { type CompiledDefinition, DefinitionRefusedError, type Views } from './xds/views';

// Keeps the snapshot cache in step with the definition file. fs.watch on the file's
// directory (not the file: editors save by writing a new file and renaming it over
// the old one, which ends a watch on the file itself), debounced, plus a slow mtime
// poll for file systems where fs.watch says nothing (network mounts, some containers).
// A definition that does not compile changes nothing: the last good snapshot stays.
// The certificate and key files the definition names are watched the same way (their
// directories, any entry: a Kubernetes Secret volume swaps a `..data` symlink, not the
// files), so a rotated certificate is served without a restart.

/** "routes[0].to: unknown service", or just the message for the file as a whole (path ''). */
export const describeFieldError = (error: FieldError): string =>
  error.path ? `${error.path}: ${error.message}` : error.message;

export type Compile = (path: string) => CompileResult | Promise<CompileResult>;

/** A saved mesh workload without a mesh CA configured: it cannot be given a certificate. */
const noMeshCa: WorkloadSecrets = {
  secretsFor: () => {
    throw new Error('no mesh CA is configured (CONTROL_PLANE_MESH_CA_*)');
  },
  onRotation: () => {},
};

export interface DefinitionWatcherOptions {
  /** The definition file (absolute, or relative to the working directory). */
  path: string;
  cache: SnapshotCache;
  logger: Logger;
  registry: Registry;
  /** Defaults to compileDefinitionFile. */
  compile?: Compile;
  /** Snapshot group the definition feeds (without views). */
  group?: string;
  /** Compiles one snapshot per view (group) from every definition; replaces `group`. */
  views?: Views;
  /** Where each good definition is saved for a restart with an invalid file. */
  store?: LastGoodStore;
  /** The mesh CA: what gives a saved definition's workloads current certificates (never saved with keys). */
  secrets?: WorkloadSecrets;
  /** A burst of changes is compiled once it has been quiet this long … */
  debounceMs?: number;
  /** … or once it has gone on this long, whichever comes first. */
  maxDelayMs?: number;
  pollIntervalMs?: number;
}

export interface ReloadStatus {
  at: string;
  trigger: string;
  result: 'ok' | 'invalid';
  errors: FieldError[];
  /** Types whose version changed in any view (empty when the definition compiled to the same resources). */
  changedTypes: string[];
  /** With views: each view's changed types. */
  changedByView?: Record<string, string[]>;
  /** The saved last good definition is served because the file was invalid at start-up. */
  servingSaved?: { savedAt: string };
  /** Saving the good definition failed (it is still served). */
  saveError?: string;
}

export interface WatcherStatus {
  path: string;
  lastReload?: ReloadStatus;
  /** When the snapshot now served was compiled. */
  lastGoodAt?: string;
}

/** mtime, size and inode of the definition and of each certificate file (stat follows symlinks). */
type FileSignature = string;

export class DefinitionWatcher {
  private readonly log: Logger;
  private readonly compile: Compile;
  private readonly group: string;
  private readonly debounceMs: number;
  private readonly maxDelayMs: number;
  /** When the first change of the burst now being debounced arrived. */
  private burstStart?: number;
  private readonly pollIntervalMs: number;
  private readonly reloads: Counter<'result'>;
  private fsWatcher?: FSWatcher;
  /** The certificate and key files of the last compile that got as far as naming them. */
  private dependencies: string[] = [];
  private readonly dependencyWatchers = new Map<string, FSWatcher>();
  private pollTimer?: NodeJS.Timeout;
  private debounceTimer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private rerun = false;
  private stopped = false;
  private signature?: FileSignature;
  private lastReload?: ReloadStatus;
  private lastGoodAt?: Date;
  /** The definition served now; undefined while serving a saved definition (no IR is saved). */
  private served?: CompiledDefinition;
  /** The saved groups served while the file is invalid at start-up (workload keys not in them). */
  private savedGroups?: ReadonlyMap<string, ResourcesByType>;
  private readonly compileSeconds: Histogram<'result'>;
  /** This process saved a definition to the store (so an unchanged one need not be saved again). */
  private saved = false;

  constructor(private readonly opts: DefinitionWatcherOptions) {
    this.log = opts.logger.child({ category: 'technical', component: 'definition', definition: opts.path });
    this.compile = opts.compile ?? compileDefinitionFile;
    this.group = opts.group ?? defaultGroup;
    this.debounceMs = opts.debounceMs ?? 100;
    this.maxDelayMs = opts.maxDelayMs ?? 10_000;
    this.pollIntervalMs = opts.pollIntervalMs ?? 2_000;
    this.reloads = new Counter({
      name: 'sekisho_definition_reloads_total',
      help: 'Compilations of the gateway definition, by result (ok, invalid)',
      labelNames: ['result'],
      registers: [opts.registry],
    });
    this.compileSeconds = new Histogram({
      name: 'sekisho_definition_compile_seconds',
      help: 'Time to compile the gateway definition (schema, IR, translation, views), by result (ok, invalid)',
      labelNames: ['result'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [opts.registry],
    });
  }

  /**
   * Compiles the definition and, when it is valid, serves it. An invalid definition
   * leaves the cache alone; its errors are logged one per field (unless `quiet`,
   * for the initial load, whose caller prints them) and kept for status().
   */
  async reload(trigger: string, { quiet = false }: { quiet?: boolean } = {}): Promise<CompileResult> {
    this.signature = await this.readSignature();
    let result: CompileResult;
    const compileStarted = process.hrtime.bigint();
    try {
      result = await this.compile(this.opts.path);
    } catch (error) {
      // compileDefinitionFile never throws; a custom compile might.
      result = { ok: false, errors: [{ path: '', message: `cannot compile: ${String(error)}` }] };
    }
    if (result.files) this.watchDependencies(result.files);
    let changedTypes: string[] = [];
    let changedByView: Record<string, string[]> | undefined;
    let groups: Map<string, ResourcesByType> | undefined;
    if (result.ok) {
      try {
        groups = this.groupsOf(result);
        ({ changedTypes, changedByView } = this.serve(groups));
      } catch (error) {
        // Refused by a view (a mesh without a CA), or a translator bug (a repeated name): the
        // cache kept the last good snapshot.
        result =
          error instanceof DefinitionRefusedError
            ? { ok: false, errors: error.errors, ...(result.files ? { files: result.files } : {}) }
            : { ok: false, errors: [{ path: '', message: `internal error: ${String(error)}` }] };
      }
    }
    this.compileSeconds.observe(
      { result: result.ok ? 'ok' : 'invalid' },
      Number(process.hrtime.bigint() - compileStarted) / 1e9,
    );
    if (result.ok) {
      this.served = result;
      this.savedGroups = undefined;
    }
    const at = new Date();
    this.lastReload = {
      at: at.toISOString(),
      trigger,
      result: result.ok ? 'ok' : 'invalid',
      errors: result.ok ? [] : result.errors,
      changedTypes,
      ...(changedByView ? { changedByView } : {}),
    };
    this.reloads.inc({ result: this.lastReload.result });
    if (result.ok) {
      this.lastGoodAt = at;
      // Saved when it differs from what this process saved last (a reload that changed nothing writes nothing).
      if (this.opts.store && groups && (changedTypes.length > 0 || !this.saved)) {
        try {
          await this.opts.store.save(this.opts.path, withoutWorkloadKeys(groups));
          this.saved = true;
        } catch (error) {
          this.lastReload.saveError = String(error);
          this.log.error(
            { event_type: 'definition_save_failed', error_details: String(error) },
            'cannot save the last good definition (it is served all the same)',
          );
        }
      }
      this.log.info(
        {
          event_type: 'definition_loaded',
          trigger,
          changed_types: changedTypes,
          versions: this.opts.views ? undefined : this.opts.cache.versions(this.group),
          changed_by_view: changedByView,
        },
        changedTypes.length > 0 ? 'gateway definition loaded' : 'gateway definition unchanged',
      );
    } else if (!quiet) {
      for (const error of result.errors) {
        this.log.error(
          { event_type: 'definition_invalid', trigger, field: error.path, error_details: error.message },
          `invalid gateway definition: ${describeFieldError(error)}`,
        );
      }
      this.log.error(
        { event_type: 'definition_rejected', trigger, errors: result.errors.length },
        'gateway definition rejected; still serving the last good one',
      );
    }
    return result;
  }

  /** Each group's (view's) resources of a compiled definition: every view, or the one group. */
  private groupsOf(compiled: CompiledDefinition): Map<string, ResourcesByType> {
    return this.opts.views ? this.opts.views.compile(compiled) : new Map([[this.group, compiled.resources]]);
  }

  /** Sets every group's snapshot at once; throws, changing nothing, on a translator bug. */
  private serve(groups: ReadonlyMap<string, ResourcesByType>): {
    changedTypes: string[];
    changedByView?: Record<string, string[]>;
  } {
    const changedByGroup = this.opts.cache.setSnapshots(groups);
    const changedTypes = sortByPushOrder(new Set(Object.values(changedByGroup).flat()));
    return this.opts.views ? { changedTypes, changedByView: changedByGroup } : { changedTypes };
  }

  /**
   * Serves the last good definition saved in the store: for a start-up whose file is
   * invalid (`invalid` is that compile's result, reported in status()). False when none is saved.
   */
  async serveSaved(invalid: CompileResult): Promise<boolean> {
    const saved = await this.opts.store?.load(this.opts.path);
    if (!saved) return false;
    const fixed = this.opts.views?.names ?? [this.group];
    const missing = fixed.filter((group) => !saved.groups.has(group));
    if (missing.length > 0) {
      // Saved by a control plane with other views: serving part of them would be a guess.
      this.log.error(
        { event_type: 'definition_saved_unusable', file: this.opts.store?.file, missing_views: missing },
        'the saved definition lacks views this control plane serves; not using it',
      );
      return false;
    }
    // The views that follow the definition (sidecar views) are whatever it had when it was saved.
    const family = [...saved.groups.keys()].filter(
      (group) => !fixed.includes(group) && this.opts.views?.accepts(group),
    );
    const wanted = [...fixed, ...family];
    const savedGroups = new Map(wanted.map((group) => [group, saved.groups.get(group) as ResourcesByType]));
    let groups: Map<string, ResourcesByType>;
    try {
      groups = this.withCurrentSecrets(savedGroups);
    } catch (error) {
      this.log.error(
        { event_type: 'definition_saved_unusable', file: this.opts.store?.file, error_details: String(error) },
        'the saved definition has mesh workloads this control plane cannot give certificates; not using it',
      );
      return false;
    }
    this.opts.views?.restore(family);
    this.savedGroups = savedGroups;
    const { changedTypes, changedByView } = this.serve(groups);
    this.lastGoodAt = new Date(saved.savedAt);
    this.lastReload = {
      at: new Date().toISOString(),
      trigger: 'initial',
      result: 'invalid',
      errors: invalid.ok ? [] : invalid.errors,
      changedTypes,
      ...(changedByView ? { changedByView } : {}),
      servingSaved: { savedAt: saved.savedAt },
    };
    for (const error of this.lastReload.errors) {
      this.log.error(
        { event_type: 'definition_invalid', trigger: 'initial', field: error.path, error_details: error.message },
        `invalid gateway definition: ${describeFieldError(error)}`,
      );
    }
    this.log.error(
      {
        event_type: 'definition_rejected',
        trigger: 'initial',
        serving_saved_from: saved.savedAt,
        file: this.opts.store?.file,
      },
      'gateway definition invalid at start-up; serving the last good one saved before',
    );
    return true;
  }

  /** Starts watching. Call after the initial reload(). */
  start(): void {
    this.stopped = false;
    this.watchDependencies(this.dependencies);
    const dir = dirname(this.opts.path);
    const name = basename(this.opts.path);
    try {
      this.fsWatcher = fsWatch(dir, { persistent: false }, (_event, filename) => {
        if (!filename || filename === name) this.schedule('file changed');
      });
      this.fsWatcher.on('error', (error) => {
        this.log.warn(
          { event_type: 'definition_watch_failed', error_details: error.message },
          'watching the definition directory failed; falling back to polling',
        );
        this.fsWatcher?.close();
        this.fsWatcher = undefined;
      });
    } catch (error) {
      this.log.warn(
        { event_type: 'definition_watch_failed', error_details: String(error) },
        'cannot watch the definition directory; polling only',
      );
    }
    this.pollTimer = setInterval(() => void this.poll(), this.pollIntervalMs);
    this.pollTimer.unref();
  }

  /** Stops watching and waits for a reload in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.fsWatcher?.close();
    this.fsWatcher = undefined;
    for (const watcher of this.dependencyWatchers.values()) watcher.close();
    this.dependencyWatchers.clear();
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
    await this.running;
  }

  /** The IR of the definition served now, or undefined while a saved definition is served. */
  ir(): GatewayIR | undefined {
    return this.served?.ir;
  }

  /**
   * Serves every view again from the definition compiled last, without reading the file: for
   * what views add on their own clock (a rotated workload certificate). While a saved
   * definition is served, its workloads get current certificates. False, changing nothing,
   * when neither is there.
   */
  refresh(trigger: string): boolean {
    const groups = this.served
      ? this.groupsOf(this.served)
      : this.savedGroups && this.withCurrentSecrets(this.savedGroups);
    if (!groups) return false;
    const { changedTypes, changedByView } = this.serve(groups);
    this.log.info(
      { event_type: 'definition_refreshed', trigger, changed_types: changedTypes, changed_by_view: changedByView },
      'views served again from the last compiled definition',
    );
    return true;
  }

  /** Saved groups with current workload certificates; throws when a workload cannot get one. */
  private withCurrentSecrets(saved: ReadonlyMap<string, ResourcesByType>): Map<string, ResourcesByType> {
    return withCurrentWorkloadSecrets(saved, this.opts.secrets ?? noMeshCa);
  }

  status(): WatcherStatus {
    return { path: this.opts.path, lastReload: this.lastReload, lastGoodAt: this.lastGoodAt?.toISOString() };
  }

  /** One directory watch per certificate directory; any entry changing there reloads. */
  private watchDependencies(files: string[]): void {
    this.dependencies = files;
    if (this.stopped) return;
    const dirs = new Set(files.map((file) => dirname(file)));
    for (const [dir, watcher] of this.dependencyWatchers) {
      if (!dirs.has(dir)) {
        watcher.close();
        this.dependencyWatchers.delete(dir);
      }
    }
    for (const dir of dirs) {
      if (this.dependencyWatchers.has(dir)) continue;
      try {
        const watcher = fsWatch(dir, { persistent: false }, () => this.schedule('certificate changed'));
        watcher.on('error', () => {
          watcher.close();
          this.dependencyWatchers.delete(dir);
        });
        this.dependencyWatchers.set(dir, watcher);
      } catch (error) {
        // A directory that does not exist (yet): the poll notices when the files appear.
        this.log.debug({ event_type: 'certificate_watch_failed', dir, error_details: String(error) }, 'polling only');
      }
    }
  }

  // Debounced: the reload runs once changes have been quiet for debounceMs, but a burst
  // that never pauses still reloads every maxDelayMs.
  private schedule(trigger: string): void {
    if (this.stopped) return;
    const now = Date.now();
    this.burstStart ??= now;
    clearTimeout(this.debounceTimer);
    const delay = Math.max(0, Math.min(this.debounceMs, this.burstStart + this.maxDelayMs - now));
    this.debounceTimer = setTimeout(() => {
      this.burstStart = undefined;
      this.runScheduled(trigger);
    }, delay);
    this.debounceTimer.unref();
  }

  // One reload at a time; a change during a reload gets one more reload after it.
  private runScheduled(trigger: string): void {
    if (this.stopped) return;
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.running = this.reload(trigger)
      .then(() => undefined)
      .catch((error: unknown) => {
        this.log.error({ event_type: 'definition_reload_failed', error_details: String(error) }, 'reload failed');
      })
      .finally(() => {
        this.running = undefined;
        if (this.rerun) {
          this.rerun = false;
          this.schedule(trigger);
        }
      });
  }

  private async poll(): Promise<void> {
    if ((await this.readSignature()) !== this.signature) this.schedule('file changed (poll)');
  }

  private async readSignature(): Promise<FileSignature> {
    const one = async (path: string) => {
      try {
        const s = await stat(path);
        return `${s.mtimeMs}/${s.size}/${s.ino}`;
      } catch {
        return 'missing';
      }
    };
    return (await Promise.all([this.opts.path, ...this.dependencies].map(one))).join('\n');
  }
}
