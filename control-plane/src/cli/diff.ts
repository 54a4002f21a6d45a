// `sekisho diff OLD NEW`: which resources of which views a change from OLD to NEW would push,
// per type: added, changed (other bytes under the same name), removed. The comparison is the
// xDS cache's own: a resource's content hash, so "changed" is exactly what gets a new version.
import { parseArgs } from 'node:util';
import type { CompileResult } from '../definition/load';
import { resourceHash } from '../xds/cache';
import type { ResourcesByType } from '../xds/resources';
import { pushOrder } from '../xds/type-urls';
import { compileFile, invalidReport } from './compile';
import { type CliIo, exitCodes, UsageError } from './io';
import { typeName } from './type-names';
import { parseView, type View, viewName, viewResources, viewSyntax } from './views';

export const diffUsage = `Usage: sekisho diff OLD NEW [--view VIEW]... [--json]

Compiles two versions of a gateway definition and lists, per view and resource type, the
resources that going from OLD to NEW would push: + added, ~ changed, - removed. Delta xDS
pushes exactly these; state-of-the-world xDS sends every resource of a changed type to the
nodes subscribed to all of them (clusters and listeners) and the changed names otherwise.

Options:
  --view VIEW   ${viewSyntax}; repeat for several (default: ingress)
  --json        one JSON object: { views: [{ view, types: [{ type, added, changed, removed }] }] }
  -h, --help    this text

Exit codes: 0 compared (whether or not anything changed), 1 OLD or NEW is invalid (its
errors on stderr), 2 usage error.
`;

export interface TypeDiff {
  type: string;
  added: string[];
  changed: string[];
  removed: string[];
}

export async function diffCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args);
  if (values.help) {
    io.stdout(diffUsage);
    return exitCodes.ok;
  }
  if (positionals.length !== 2) {
    throw new UsageError(`diff needs OLD and NEW, got ${positionals.length} file(s)`, diffUsage);
  }
  const [oldFile = '', newFile = ''] = positionals;
  const views = (values.view ?? ['ingress']).map((text) => parseView(text, diffUsage));

  const compiled: Array<Extract<CompileResult, { ok: true }>> = [];
  let invalid = false;
  for (const file of [oldFile, newFile]) {
    const result = await compileFile(file, io.cwd, diffUsage);
    if (result.ok) compiled.push(result);
    else {
      invalid = true;
      io.stderr(invalidReport(file, result, io.cwd));
    }
  }
  const [before, after] = compiled;
  if (invalid || before === undefined || after === undefined) return exitCodes.invalid;

  const diffs = views.map((view: View) => ({
    view: viewName(view),
    types: diffResources(viewResources(before, view, diffUsage), viewResources(after, view, diffUsage)),
  }));
  io.stdout(values.json ? `${JSON.stringify({ views: diffs }, null, 2)}\n` : diffs.map(describeViewDiff).join(''));
  return exitCodes.ok;
}

/** Per type in push order, only the types where something differs. */
export function diffResources(before: ResourcesByType, after: ResourcesByType): TypeDiff[] {
  const hashes = (resources: ResourcesByType, typeUrl: string) =>
    new Map((resources.get(typeUrl) ?? []).map((r) => [r.name, resourceHash(typeUrl, r.name, r.resource)] as const));
  const types = [...new Set([...pushOrder, ...before.keys(), ...after.keys()])];
  return types.flatMap((typeUrl) => {
    const old = hashes(before, typeUrl);
    const current = hashes(after, typeUrl);
    const sorted = (names: Iterable<string>) => [...names].sort();
    const diff: TypeDiff = {
      type: typeName(typeUrl),
      added: sorted([...current.keys()].filter((name) => !old.has(name))),
      changed: sorted(
        [...current].filter(([name, hash]) => old.has(name) && old.get(name) !== hash).map(([name]) => name),
      ),
      removed: sorted([...old.keys()].filter((name) => !current.has(name))),
    };
    return diff.added.length + diff.changed.length + diff.removed.length > 0 ? [diff] : [];
  });
}

function describeViewDiff({ view, types }: { view: string; types: TypeDiff[] }): string {
  if (types.length === 0) return `${view}: no change, nothing would be pushed\n`;
  const total = types.reduce((sum, t) => sum + t.added.length + t.changed.length + t.removed.length, 0);
  const lines = [`${view}: ${total} resource${total === 1 ? '' : 's'} would be pushed`];
  for (const type of types) {
    const counts = [
      [type.added.length, 'added'],
      [type.changed.length, 'changed'],
      [type.removed.length, 'removed'],
    ]
      .filter(([n]) => n !== 0)
      .map(([n, what]) => `${n} ${what}`)
      .join(', ');
    lines.push(`  ${type.type}: ${counts}`);
    for (const name of type.added) lines.push(`    + ${name}`);
    for (const name of type.changed) lines.push(`    ~ ${name}`);
    for (const name of type.removed) lines.push(`    - ${name}`);
  }
  return `${lines.join('\n')}\n`;
}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: {
        view: { type: 'string', multiple: true },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, diffUsage);
  }
}
