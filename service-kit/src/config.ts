import * as z from 'zod';
import { parseDuration } from './duration';

// Configuration comes from environment variables, validated once at start-up. The
// schema's keys are the variable names, so an error can name the variable exactly.

export class ConfigError extends Error {
  constructor(readonly problems: Array<{ variable: string; message: string }>) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig<S extends z.ZodObject>(schema: S, env: NodeJS.ProcessEnv = process.env): z.output<S> {
  // Empty strings count as unset, as they do in most shells' `VAR= cmd`.
  const input = Object.fromEntries(
    Object.keys(schema.shape).map((key) => [key, env[key] === '' ? undefined : env[key]]),
  );
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((issue) => ({
      variable: String(issue.path[0] ?? '(environment)'),
      message: `${issue.message}${issue.path[0] !== undefined ? ` (got ${shown(input[String(issue.path[0])])})` : ''}`,
    })),
  );
}

// The refused value is echoed so the operator sees the typo, but never a password in a
// URL (redis://user:pass@host) and never more than a line of it.
function shown(value: string | undefined): string {
  if (value === undefined) return 'nothing';
  const text = value.replace(/\/\/[^/@\s]*@/g, '//***@');
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

/** Decimal digits only: `z.coerce` would read ' ' as port 0 and '0x50' as 80. */
export const envPort = (defaultPort: number) =>
  z
    .string()
    .regex(/^\d{1,5}$/, 'expected a port number (0-65535)')
    .transform(Number)
    .refine((port) => port <= 65535, 'expected a port number (0-65535)')
    .default(defaultPort);

/** '500ms', '2s', '1m', '1h' → milliseconds. */
export const envDuration = (defaultValue: string) =>
  z
    .string()
    .default(defaultValue)
    .transform((value, ctx) => {
      const ms = parseDuration(value);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: 'expected a duration like 500ms, 2s, 1m or 1h' });
        return z.NEVER;
      }
      return ms;
    });

export const envUrl = (defaultValue: string) => z.url().default(defaultValue);

export const envEnum = <const T extends readonly [string, ...string[]]>(values: T, defaultValue: T[number]) =>
  z.enum(values).default(defaultValue as never);

export const envLogLevel = () => envEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info');

const hostPort = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/** host:port (host may be a name, an IPv4 address or a bracketed IPv6 address). */
export const envHostPort = (defaultValue: string) =>
  z
    .string()
    .default(defaultValue)
    .refine((v) => hostPort.test(v), 'expected host:port');

/** host:port as envHostPort, or unset (a caller decides what its absence means). */
export const envOptionalHostPort = () =>
  z
    .string()
    .refine((v) => hostPort.test(v), 'expected host:port')
    .optional();
