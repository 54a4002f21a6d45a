// Permission groups with inheritance resolved: a group's permissions are its parents'
// (in the order they are named) followed by its own additions, without duplicates.
import type { FieldError } from '../definition/field-error';
import type { GatewayDefinition } from '../definition/schema';
import type { GroupIR } from './types';

type GroupsInput = GatewayDefinition['identity']['groups'];

export function resolveGroups(groups: GroupsInput): { groups: GroupIR[]; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const resolved = new Map<string, string[]>();
  const failed = new Set<string>();

  const parentsOf = (name: string): string[] => {
    const group = groups[name];
    if (group === undefined || Array.isArray(group)) return [];
    return typeof group.inherits === 'string' ? [group.inherits] : group.inherits;
  };
  const inheritsPath = (name: string, index: number): string => {
    const group = groups[name];
    const single = group !== undefined && !Array.isArray(group) && typeof group.inherits === 'string';
    return `identity.groups.${name}.inherits${single ? '' : `[${index}]`}`;
  };

  // Depth-first with the current chain on a stack, so a cycle is reported with its members.
  const resolve = (name: string, chain: string[]): string[] | undefined => {
    const done = resolved.get(name);
    if (done) return done;
    if (failed.has(name)) return undefined;
    const group = groups[name];
    if (group === undefined) return undefined;
    if (Array.isArray(group)) {
      const permissions = unique(group);
      resolved.set(name, permissions);
      return permissions;
    }
    const permissions: string[] = [];
    let ok = true;
    for (const [index, parent] of parentsOf(name).entries()) {
      if (!Object.hasOwn(groups, parent)) {
        errors.push({
          path: inheritsPath(name, index),
          message: `inherits unknown group "${parent}" (groups: ${Object.keys(groups).sort().join(', ')})`,
        });
        ok = false;
        continue;
      }
      if (chain.includes(parent)) {
        const cycle = [...chain.slice(chain.indexOf(parent)), parent].join(' → ');
        errors.push({ path: inheritsPath(name, index), message: `inheritance cycle: ${cycle}` });
        ok = false;
        continue;
      }
      const inherited = resolve(parent, [...chain, parent]);
      if (inherited === undefined) ok = false;
      else permissions.push(...inherited);
    }
    if (!ok) {
      failed.add(name);
      return undefined;
    }
    const all = unique([...permissions, ...group.adds]);
    resolved.set(name, all);
    return all;
  };

  for (const name of Object.keys(groups).sort()) resolve(name, [name]);
  return {
    groups: [...resolved.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, permissions]) => ({ name, permissions })),
    errors,
  };
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}
