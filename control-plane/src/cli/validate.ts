// `sekisho validate FILE`: is this definition one the control plane would serve? Every error
// with its field path, exit 0 / 1 / 2, for a platform team's CI.
import { parseArgs } from 'node:util';
import { compileFile, displayErrors, invalidReport } from './compile';
import { type CliIo, exitCodes, UsageError } from './io';

export const validateUsage = `Usage: sekisho validate FILE [--json]

Checks a gateway definition (.ts, .mts, .js, .mjs, .yaml, .yml, .json) the way the control
plane does: schema, cross-references, certificate files. Prints each error as
"<field path>: <message>", e.g. "routes[3].to: names no service in services: ...".

Options:
  --json      one JSON object: { file, valid, errors: [{ path, message }] }
  -h, --help  this text

Exit codes: 0 valid, 1 invalid, 2 usage error (unknown option, missing or unreadable argument).
`;

export async function validateCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args);
  if (values.help) {
    io.stdout(validateUsage);
    return exitCodes.ok;
  }
  const [file, ...extra] = positionals;
  if (file === undefined) throw new UsageError('validate needs a FILE', validateUsage);
  if (extra.length > 0) throw new UsageError(`validate takes one FILE, got also: ${extra.join(' ')}`, validateUsage);

  const result = await compileFile(file, io.cwd, validateUsage);
  if (values.json) {
    const errors = result.ok ? [] : displayErrors(result, io.cwd);
    io.stdout(`${JSON.stringify({ file, valid: result.ok, errors }, null, 2)}\n`);
  } else if (result.ok) {
    const services = Object.keys(result.definition.services).length;
    io.stdout(`${file}: valid (${count(result.ir.routes.length, 'route')}, ${count(services, 'service')})\n`);
  } else {
    io.stdout(invalidReport(file, result, io.cwd));
  }
  return result.ok ? exitCodes.ok : exitCodes.invalid;
}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: { json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, validateUsage);
  }
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}
