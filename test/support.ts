// What every end-to-end file needs around the stack: its processes' output under a failing
// test, and definition files written the way editors and config tools write them.

import { randomUUID } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Stack } from '@sekisho/devstack/stack';
import { onTestFailed } from 'vitest';
import { stringify } from 'yaml';

/**
 * Prints every process's recent output (the last `lines` lines of each, all that is kept
 * when omitted) if the running test fails. `stack` is read at failure time.
 */
export function showStackLogsOnFailure(stack: () => Pick<Stack, 'logs'> | undefined, lines?: number): void {
  onTestFailed(() => {
    console.error(stack()?.logs(lines));
  });
}

/** Write then rename, so a watcher never reads half a file. */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  const temporary = join(dirname(file), `.${randomUUID()}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

/** A gateway definition as YAML, written atomically. */
export async function writeDefinitionFile(file: string, definition: unknown): Promise<void> {
  await writeFileAtomically(file, stringify(definition));
}
