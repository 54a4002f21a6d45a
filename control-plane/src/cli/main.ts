// `sekisho <command>`: the control plane's operator tool. `npm run sekisho -- <command>` from
// the repository, or the `sekisho` bin of @sekisho/control-plane (bin/sekisho.mjs).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { diffCommand } from './diff';
import { type CliIo, exitCodes, UsageError } from './io';
import { renderCommand } from './render';
import { statusCommand } from './status';
import { validateCommand } from './validate';

export const usage = `Usage: sekisho <command> [options]

Commands:
  validate FILE                 check a gateway definition; each error with its field path
  render FILE [--view VIEW]     the resources a view is served, as YAML (--bootstrap: a static Envoy bootstrap)
  diff OLD NEW [--view VIEW]    which resources of which views going from OLD to NEW would push
  status URL [--token-file F]   the proxies connected to a running control plane (its admin API), as a table

Run \`sekisho <command> --help\` for a command's options.
Exit codes: 0 success, 1 invalid definition (status: the control plane cannot be read), 2 usage error.
`;

const commands: Record<string, (args: string[], io: CliIo) => Promise<number>> = {
  validate: validateCommand,
  render: renderCommand,
  diff: diffCommand,
  status: statusCommand,
};

/** Runs one command line; never throws (an unexpected failure is reported and exits 1). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      io[name === undefined ? 'stderr' : 'stdout'](usage);
      return name === undefined ? exitCodes.usage : exitCodes.ok;
    }
    const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
    if (command === undefined) throw new UsageError(`unknown command "${name}"`, usage);
    return await command(args, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`sekisho: ${error.message}\n${error.usage === undefined ? '' : `\n${error.usage}`}`);
      return exitCodes.usage;
    }
    io.stderr(`sekisho: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return exitCodes.invalid;
  }
}

export function processIo(): CliIo {
  return {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    stdoutBytes: (bytes) => process.stdout.write(bytes),
    stdoutIsTty: process.stdout.isTTY === true,
    // npm run starts scripts in the repository root; INIT_CWD is where the user ran it.
    cwd: process.env.INIT_CWD ?? process.cwd(),
  };
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // exitCode rather than exit(): stdout is flushed first even when it is a pipe.
  process.exitCode = await runCli(process.argv.slice(2), processIo());
}
