import { type Document, isAlias, isMap, isScalar, isSeq, type Node, parseDocument } from 'yaml';
import * as z from 'zod';

// One envoyproxy/ratelimit configuration file: YAML text → checked plain data. The file
// format is that project's (domain, nested descriptors, rate_limit); every refusal names the
// file, the path inside it and the reason, so an operator can fix the line at once.

/** A refused file: `path` is where in the file (`descriptors[0].rate_limit.unit`). */
export class ConfigFileError extends Error {
  override name = 'ConfigFileError';
  constructor(
    readonly file: string,
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${file}: ${path === '' ? '' : `${path}: `}${reason}`);
  }
}

/** The units envoyproxy/ratelimit accepts (case-insensitive), in seconds; MONTH and YEAR are 30 and 365 days there. */
export const unitSeconds = {
  SECOND: 1,
  MINUTE: 60,
  HOUR: 3600,
  DAY: 86_400,
  WEEK: 7 * 86_400,
  MONTH: 30 * 86_400,
  YEAR: 365 * 86_400,
} as const;
export type FileUnit = keyof typeof unitSeconds;

// Scalars where that project's YAML decoder takes the text as written (`value: 8080`,
// `value: true`): read from the source, so `010` stays "010".
const textFields = new Set(['domain', 'key', 'value', 'name', 'unit']);

const text = z.string();
const flag = z.boolean().optional();

const rateLimitSchema = z
  .strictObject({
    unit: text.optional(),
    requests_per_unit: z
      .number()
      .int('must be a whole number')
      .min(0, 'must not be negative')
      .max(4_294_967_295, 'must fit in 32 bits')
      .optional(),
    unlimited: flag,
    name: text.optional(),
    replaces: z.array(z.strictObject({ name: text.min(1, 'a replaces entry needs a name') })).optional(),
  })
  .superRefine((limit, ctx) => {
    if (limit.unlimited) {
      if (limit.unit !== undefined)
        ctx.addIssue({ code: 'custom', path: ['unit'], message: 'an unlimited rate_limit must not have a unit' });
      if (limit.requests_per_unit !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['requests_per_unit'],
          message: 'an unlimited rate_limit must not have requests_per_unit',
        });
      return;
    }
    if (limit.unit === undefined) {
      ctx.addIssue({ code: 'custom', path: ['unit'], message: 'a rate_limit needs a unit (or unlimited: true)' });
    } else if (!(limit.unit.toUpperCase() in unitSeconds)) {
      ctx.addIssue({
        code: 'custom',
        path: ['unit'],
        message: `unknown unit "${limit.unit}" (expected one of ${Object.keys(unitSeconds).join(', ')})`,
      });
    }
    if (limit.requests_per_unit === undefined)
      ctx.addIssue({ code: 'custom', path: ['requests_per_unit'], message: 'a rate_limit needs requests_per_unit' });
    limit.replaces?.forEach((r, i) => {
      if (limit.name !== undefined && r.name === limit.name)
        ctx.addIssue({ code: 'custom', path: ['replaces', i, 'name'], message: 'a rate_limit cannot replace itself' });
    });
  });

const descriptorSchema = z
  .strictObject({
    key: text.min(1, 'must not be empty'),
    value: text.optional(),
    rate_limit: rateLimitSchema.optional(),
    get descriptors() {
      return z.array(descriptorSchema).optional();
    },
    shadow_mode: flag,
    quota_mode: flag,
    detailed_metric: flag,
    value_to_metric: flag,
    share_threshold: flag,
    // Known to that project (response dynamic metadata); refused below with the reason.
    metadata: z.unknown().optional(),
  })
  .superRefine((d, ctx) => {
    if (d.metadata !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['metadata'],
        message: 'metadata (response dynamic metadata) is not supported by this service',
      });
    if (d.share_threshold && !d.value?.includes('*'))
      ctx.addIssue({
        code: 'custom',
        path: ['share_threshold'],
        message: 'share_threshold needs a wildcard value (one containing *)',
      });
  });

const fileSchema = z.strictObject({
  domain: text.min(1, 'must not be empty'),
  descriptors: z.array(descriptorSchema).optional(),
});

export type FileDescriptor = z.output<typeof descriptorSchema>;
export type FileRateLimit = z.output<typeof rateLimitSchema>;
export type ConfigFile = z.output<typeof fileSchema>;

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (out, part) =>
      typeof part === 'number' ? `${out}[${part}]` : out === '' ? String(part) : `${out}.${String(part)}`,
    '',
  );

/** Parses and checks one file's text; throws ConfigFileError naming the file, path and reason. */
export function parseConfigFile(file: string, source: string): ConfigFile {
  // Duplicate keys are found below with their path; the parser's own check has only a line.
  const doc = parseDocument(source, { uniqueKeys: false });
  const syntax = doc.errors[0];
  if (syntax) {
    const at = syntax.linePos?.[0];
    throw new ConfigFileError(
      file,
      at ? `line ${at.line}, column ${at.col}` : '',
      (syntax.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, ''),
    );
  }
  const plain = toPlain(file, doc, doc.contents, [], { aliases: 0 });
  if (plain === undefined) throw new ConfigFileError(file, '', 'the file is empty');
  const parsed = fileSchema.safeParse(plain);
  if (!parsed.success) {
    const issue = parsed.error.issues[0] as z.core.$ZodIssue;
    const path = formatPath(issue.path);
    // Zod reports unknown keys on the object, naming them: make the path end at the key.
    if (issue.code === 'unrecognized_keys') {
      const key = issue.keys[0] ?? '';
      throw new ConfigFileError(file, formatPath([...issue.path, key]), `unknown key "${key}"`);
    }
    throw new ConfigFileError(file, path, issue.message);
  }
  checkDuplicateDescriptors(file, parsed.data.descriptors ?? [], 'descriptors');
  return parsed.data;
}

/** Aliases a file may expand: enough for shared snippets, too few for a "billion laughs". */
const maxAliases = 100;
/** Descriptor trees are a few levels deep; this bounds the recursion on a hostile file. */
const maxDepth = 64;

// YAML → plain values, refusing duplicate keys and non-string keys with their path. Nulls
// (`rate_limit:` with nothing after it) are dropped, as that project treats them as absent.
function toPlain(
  file: string,
  doc: Document,
  node: unknown,
  path: Array<string | number>,
  budget: { aliases: number },
): unknown {
  if (node === null || node === undefined) return undefined;
  if (path.length > maxDepth)
    throw new ConfigFileError(file, formatPath(path), `nested deeper than ${maxDepth} levels`);
  if (isAlias(node)) {
    if (++budget.aliases > maxAliases)
      throw new ConfigFileError(file, formatPath(path), `more than ${maxAliases} aliases expanded`);
    return toPlain(file, doc, node.resolve(doc), path, budget);
  }
  if (isMap(node)) {
    const out: Record<string, unknown> = {};
    const seen = new Set<string>();
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      if (!isScalar(keyNode) || typeof keyNode.value !== 'string')
        throw new ConfigFileError(file, formatPath(path), 'keys must be strings');
      const key = keyNode.value;
      if (seen.has(key)) throw new ConfigFileError(file, formatPath([...path, key]), `duplicate key "${key}"`);
      seen.add(key);
      const valueNode = pair.value as Node | null;
      const value =
        textFields.has(key) && isScalar(valueNode) && valueNode.value !== null && typeof valueNode.value !== 'string'
          ? (valueNode.source ?? String(valueNode.value))
          : toPlain(file, doc, valueNode, [...path, key], budget);
      if (value !== undefined) out[key] = value;
    }
    return out;
  }
  if (isSeq(node)) return node.items.map((item, i) => toPlain(file, doc, item, [...path, i], budget) ?? null);
  if (isScalar(node)) return node.value ?? undefined;
  return undefined;
}

function checkDuplicateDescriptors(file: string, descriptors: readonly FileDescriptor[], path: string): void {
  const seen = new Map<string, number>();
  descriptors.forEach((d, i) => {
    const where = `${path}[${i}]`;
    const id = JSON.stringify([d.key, d.value ?? '']);
    const first = seen.get(id);
    if (first !== undefined) {
      const shown = d.value ? `${d.key}=${d.value}` : d.key;
      throw new ConfigFileError(file, where, `duplicate descriptor "${shown}" (first at ${path}[${first}])`);
    }
    seen.set(id, i);
    checkDuplicateDescriptors(file, d.descriptors ?? [], `${where}.descriptors`);
  });
}
