// What a CLI command may touch: its output streams and the working directory, passed in so a
// test can run a command in-process and the bin runs it on the real process.

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Binary output (the static bootstrap) when no --output file is given. */
  stdoutBytes(bytes: Uint8Array): void;
  /** Whether stdout is a terminal (binary output is then refused). */
  stdoutIsTty: boolean;
  cwd: string;
}

/** A mistake in how the command was called: exit code 2, with the command's usage. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Exit codes, the same for every command (CI scripts depend on them). */
export const exitCodes = { ok: 0, invalid: 1, usage: 2 } as const;
