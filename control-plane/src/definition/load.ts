// The compile pipeline's entry points: definition → (zod) → IR → (translators) → resources.
// Nothing is served unless all of it succeeds; every problem comes back as a FieldError.
import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildIR } from '../ir/build';
import { certificateFiles, fileSystemSource, type TlsFileSource } from '../ir/tls';
import type { GatewayIR } from '../ir/types';
import { translate } from '../translate/index';
import type { ResourcesByType } from '../xds/resources';
import { type FieldError, issuesToFieldErrors } from './field-error';
import { loadModuleDefault } from './module-loader';
import { type GatewayDefinition, gatewayDefinitionSchema } from './schema';

export type { FieldError } from './field-error';

export type CompileResult =
  | { ok: true; definition: GatewayDefinition; ir: GatewayIR; resources: ResourcesByType; files: string[] }
  | { ok: false; errors: FieldError[]; files?: string[] };

export interface CompileOptions {
  /** Where relative certFile/keyFile paths start: the definition file's directory; default the working directory. */
  baseDir?: string;
  /** Reads the certificate files; default the file system. */
  files?: TlsFileSource;
}

/**
 * Validate, build the IR (cross-reference checks, certificate files read and checked), translate.
 * Pure except for reading the certificate files through `options.files`. `files` in the result:
 * the absolute paths of the certificate and key files the definition names (also when it is
 * invalid, once its shape is), which a watcher watches for rotation.
 */
export function compileDefinition(input: unknown, options: CompileOptions = {}): CompileResult {
  const parsed = gatewayDefinitionSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) return { ok: false, errors: issuesToFieldErrors(parsed.error.issues) };
  const source = options.files ?? fileSystemSource(resolve(options.baseDir ?? process.cwd()));
  const files = certificateFiles(parsed.data.listeners, source.baseDir);
  const built = buildIR(parsed.data, source);
  if (!built.ok) return { ...built, files };
  return { ok: true, definition: parsed.data, ir: built.ir, resources: translate(built.ir), files };
}

const yamlExtensions = new Set(['.yaml', '.yml', '.json']);
const moduleExtensions = new Set(['.ts', '.mts', '.js', '.mjs']);

/**
 * Reads a definition file: YAML/JSON, or a TS/JS module whose default export is the
 * definition (usually `defineGateway({...})`), loaded in a worker thread of its own
 * (module-loader.ts), so no version of it stays cached in this process. Never throws: a file that cannot be read,
 * parsed or imported is a FieldError with path ''.
 */
export async function compileDefinitionFile(path: string): Promise<CompileResult> {
  const extension = extname(path).toLowerCase();
  let input: unknown;
  try {
    if (yamlExtensions.has(extension)) {
      input = parseYaml(await readFile(path, 'utf8'));
    } else if (moduleExtensions.has(extension)) {
      input = await loadModuleDefault(path);
    } else {
      return failure(`${path}: unsupported file type "${extension}" (use .yaml, .yml, .json, .ts, .mts, .js or .mjs)`);
    }
  } catch (error) {
    return failure(`${path}: ${describe(error)}`);
  }
  try {
    return compileDefinition(input, { baseDir: dirname(resolve(path)) });
  } catch (error) {
    // A translator bug must not take the control plane down with it.
    return failure(`${path}: internal error while compiling: ${describe(error)}`);
  }
}

function failure(message: string): CompileResult {
  return { ok: false, errors: [{ path: '', message }] };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
