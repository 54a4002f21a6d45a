// Errors that name the offending field, e.g. `routes[3].require[0]` or
// `services.customer.endpoints[0]`, so a broken definition is fixed without guessing.
import type { z } from 'zod';

export interface FieldError {
  /** Where in the definition: `routes[3].require[0]`; '' for the file as a whole. */
  path: string;
  message: string;
}

export type PathSegment = string | number;

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (typeof segment === 'string' && /^[A-Za-z_$][\w$-]*$/.test(segment)) out += out ? `.${segment}` : segment;
    else out += `[${JSON.stringify(String(segment))}]`;
  }
  return out;
}

type Issue = z.core.$ZodIssue;

/** zod issues to FieldErrors, with messages that say what to write instead. */
export function issuesToFieldErrors(issues: readonly Issue[], base: readonly PropertyKey[] = []): FieldError[] {
  return issues.flatMap((issue) => issueToFieldErrors(issue, base));
}

function issueToFieldErrors(issue: Issue, base: readonly PropertyKey[]): FieldError[] {
  const path = [...base, ...issue.path];
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => ({
        path: formatPath([...path, key]),
        message: `unknown field "${key}" (fields are checked strictly so that typos are caught)`,
      }));
    case 'invalid_union': {
      // Report the branch whose shape matched (e.g. the object form of a group), not "Invalid input".
      const matching = issue.errors.filter(
        (branch) => !branch.some((inner) => inner.path.length === 0 && inner.code === 'invalid_type'),
      );
      const [only] = matching;
      if (matching.length === 1 && only) return issuesToFieldErrors(only, path);
      return [{ path: formatPath(path), message: `has the wrong shape: ${describeUnion(issue)}` }];
    }
    case 'invalid_key':
      return issue.issues.map((inner) => ({
        path: formatPath([...path]),
        message: `invalid name: ${inner.message}`,
      }));
    case 'invalid_type':
      if (issue.input === undefined) return [{ path: formatPath(path), message: 'is required' }];
      return [{ path: formatPath(path), message: `must be ${article(issue.expected)}, got ${typeName(issue.input)}` }];
    case 'too_small':
      return [
        { path: formatPath(path), message: boundMessage('at least', issue.origin, issue.minimum) ?? issue.message },
      ];
    case 'too_big':
      return [
        { path: formatPath(path), message: boundMessage('at most', issue.origin, issue.maximum) ?? issue.message },
      ];
    default:
      return [{ path: formatPath(path), message: issue.message }];
  }
}

function boundMessage(bound: string, origin: string, limit: number | bigint): string | undefined {
  if (origin === 'array') return `must have ${bound} ${limit} ${limit === 1 ? 'item' : 'items'}`;
  if (origin === 'number' || origin === 'int') return `must be ${bound} ${limit}`;
  return undefined;
}

function describeUnion(issue: Extract<Issue, { code: 'invalid_union' }>): string {
  const expected = issue.errors.flatMap((branch) =>
    branch.flatMap((inner) => (inner.path.length === 0 && inner.code === 'invalid_type' ? [inner.expected] : [])),
  );
  return expected.length > 0 ? `expected ${expected.map(article).join(' or ')}` : issue.message;
}

function article(expected: string): string {
  if (expected === 'int') return 'an integer';
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${JSON.stringify(value)}`;
}
