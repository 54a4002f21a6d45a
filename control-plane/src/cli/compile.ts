// Compiling a definition file for a command: the control plane's own compiler, so the CLI
// says exactly what a running control plane would say about the same file.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { type CompileResult, compileDefinitionFile, type FieldError } from '../definition/load';
import { UsageError } from './io';

/** A missing path is a usage error (exit 2), not an invalid definition. */
export async function compileFile(file: string, cwd: string, usage: string): Promise<CompileResult> {
  const path = resolve(cwd, file);
  if (!existsSync(path)) throw new UsageError(`${file}: no such file`, usage);
  if (!statSync(path).isFile()) throw new UsageError(`${file}: not a file`, usage);
  return compileDefinitionFile(path);
}

/** The errors, with the file named as the user typed it (messages name it by absolute path). */
export function displayErrors(result: Extract<CompileResult, { ok: false }>, cwd: string): FieldError[] {
  const prefix = `${resolve(cwd)}/`;
  return result.errors.map((error) => ({ path: error.path, message: error.message.split(prefix).join('') }));
}

/** One line per error, `<field path>: <message>` (no path for a file that cannot be read). */
export function errorLines(result: Extract<CompileResult, { ok: false }>, cwd: string): string[] {
  return displayErrors(result, cwd).map((error) =>
    error.path === '' ? error.message : `${error.path}: ${error.message}`,
  );
}

/** `<file>: invalid (n errors)` and an indented line per error. */
export function invalidReport(file: string, result: Extract<CompileResult, { ok: false }>, cwd: string): string {
  const lines = errorLines(result, cwd);
  return `${file}: invalid (${lines.length} error${lines.length === 1 ? '' : 's'})\n${lines.map((line) => `  ${line}\n`).join('')}`;
}
