// `sekisho render FILE --view ingress`: the resources a node of that view would be served, as
// YAML with every Any expanded; `--bootstrap` instead: the same resources as one static Envoy
// bootstrap (binary protobuf, as `envoy -c bootstrap.pb` reads it).
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import type { WorkloadSecrets } from '../mesh/contract';
import { redactSecrets } from '../redact';
import { renderAny } from '../translate/any';
import { staticBootstrap } from '../translate/static-bootstrap';
import type { ResourcesByType } from '../xds/resources';
import { pushOrder } from '../xds/type-urls';
import { compileFile, invalidReport } from './compile';
import { type CliIo, exitCodes, UsageError } from './io';
import { typeName, typeNames } from './type-names';
import { fileSecrets, hasPlaceholderSecrets, parseView, viewName, viewResources, viewSyntax } from './views';

export const renderUsage = `Usage: sekisho render FILE [--view VIEW] [--type TYPE]... [--bootstrap] [--output PATH]
                      [--workload-cert FILE --workload-key FILE --trust-bundle FILE]

Compiles a gateway definition and prints what a control plane serving it would send to a
node of VIEW: every resource by type (cluster, endpoint, secret, listener, route,
authzPolicy, rateLimitPolicy) in push order, as YAML with each nested Any expanded.
Private keys are shown as [redacted]; a mesh view's workload certificates (issued by the
control plane's mesh CA at run time) as placeholders.

Options:
  --view VIEW     ${viewSyntax} (default: ingress)
  --type TYPE     only resources of TYPE (${typeNames.join(', ')}); repeat for several
  --bootstrap     a static Envoy bootstrap instead (routes inline, EDS clusters static,
                  secrets static), as binary protobuf: write it to a .pb file and check it
                  with \`envoy --mode validate -c bootstrap.pb\`
  --output PATH   write to PATH instead of stdout (required for --bootstrap on a terminal)
  --workload-cert FILE, --workload-key FILE, --trust-bundle FILE
                  a mesh view's workload certificate, its key and the mesh's CA bundle (PEM),
                  instead of placeholders: needed for --bootstrap of a mesh view
  -h, --help      this text

Exit codes: 0 rendered, 1 invalid definition (errors as in validate), 2 usage error.
`;

export async function renderCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args);
  if (values.help) {
    io.stdout(renderUsage);
    return exitCodes.ok;
  }
  const [file, ...extra] = positionals;
  if (file === undefined) throw new UsageError('render needs a FILE', renderUsage);
  if (extra.length > 0) throw new UsageError(`render takes one FILE, got also: ${extra.join(' ')}`, renderUsage);
  const view = parseView(values.view, renderUsage);
  for (const type of values.type ?? []) {
    if (!typeNames.includes(type))
      throw new UsageError(`--type: unknown type "${type}" (types: ${typeNames.join(', ')})`, renderUsage);
  }
  if (values.bootstrap && values.type !== undefined) {
    throw new UsageError('--bootstrap takes every resource of the view; leave out --type', renderUsage);
  }
  if (values.bootstrap && values.output === undefined && io.stdoutIsTty) {
    throw new UsageError(
      '--bootstrap writes binary protobuf: give --output bootstrap.pb or redirect stdout',
      renderUsage,
    );
  }

  const compiled = await compileFile(file, io.cwd, renderUsage);
  if (!compiled.ok) {
    io.stderr(invalidReport(file, compiled, io.cwd));
    return exitCodes.invalid;
  }
  const secrets = await workloadSecretFiles(values, io.cwd);
  if (values.bootstrap && hasPlaceholderSecrets(compiled, view) && secrets === undefined) {
    // Its workload certificate is issued by the control plane's mesh CA at run time; a
    // bootstrap with placeholders would not start, and one with a made-up certificate would lie.
    throw new UsageError(
      `--bootstrap: the ${viewName(view)} view of a definition with a mesh needs a workload certificate: give --workload-cert, --workload-key and --trust-bundle (e.g. issued by the mesh CA), or render it as YAML`,
      renderUsage,
    );
  }
  const resources = onlyTypes(viewResources(compiled, view, renderUsage, secrets), values.type);
  const output: string | Uint8Array = values.bootstrap
    ? staticBootstrap(resources)
    : renderYaml(viewName(view), resources);

  if (values.output !== undefined) await writeFile(resolve(io.cwd, values.output), output);
  else if (typeof output === 'string') io.stdout(output);
  else io.stdoutBytes(output);
  return exitCodes.ok;
}

/** `{ view, resources: [{ type, name, resource }] }`, types in push order, names sorted. */
export function renderYaml(view: string, resources: ResourcesByType): string {
  const rendered = pushOrder.flatMap((typeUrl) =>
    (resources.get(typeUrl) ?? []).map((resource) => ({
      type: typeName(typeUrl),
      name: resource.name,
      // Never a private key on stdout (the ingress's TLS keys, a workload's).
      resource: redactSecrets(renderAny(resource.resource)),
    })),
  );
  return stringify({ view, resources: rendered }, { lineWidth: 0, aliasDuplicateObjects: false });
}

/** The three workload files, all or none; a file that cannot be read is a usage error. */
async function workloadSecretFiles(
  values: { 'workload-cert'?: string; 'workload-key'?: string; 'trust-bundle'?: string },
  cwd: string,
): Promise<WorkloadSecrets | undefined> {
  const names = ['workload-cert', 'workload-key', 'trust-bundle'] as const;
  const given = names.filter((name) => values[name] !== undefined);
  if (given.length === 0) return undefined;
  if (given.length < names.length) {
    throw new UsageError(
      `--${given.join(', --')}: give --workload-cert, --workload-key and --trust-bundle together`,
      renderUsage,
    );
  }
  const read = async (name: (typeof names)[number]) => {
    try {
      return await readFile(resolve(cwd, values[name] as string), 'utf8');
    } catch (error) {
      throw new UsageError(`--${name}: cannot read ${values[name]}: ${(error as Error).message}`, renderUsage);
    }
  };
  return fileSecrets({
    certificatePem: await read('workload-cert'),
    privateKeyPem: await read('workload-key'),
    trustBundlePem: await read('trust-bundle'),
  });
}

function onlyTypes(resources: ResourcesByType, types: string[] | undefined): ResourcesByType {
  if (types === undefined) return resources;
  return new Map([...resources].filter(([typeUrl]) => types.includes(typeName(typeUrl))));
}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: {
        view: { type: 'string', default: 'ingress' },
        type: { type: 'string', multiple: true },
        bootstrap: { type: 'boolean', default: false },
        output: { type: 'string', short: 'o' },
        'workload-cert': { type: 'string' },
        'workload-key': { type: 'string' },
        'trust-bundle': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, renderUsage);
  }
}
