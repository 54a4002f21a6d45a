// Field types shared by every part of the gateway definition's schema.
import { z } from 'zod';
import { durationFormatHint, parseDuration } from './duration';
import { parseHostPort } from './endpoint';

export const duration = z.string().superRefine((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === undefined) ctx.addIssue({ code: 'custom', message: `${durationFormatHint}, got "${text}"` });
  else if (ms === 0) ctx.addIssue({ code: 'custom', message: 'must be longer than 0' });
});

/** Rate-limit windows and block times are counted in whole seconds by the rate-limit service. */
export const seconds = duration.refine((text) => (parseDuration(text) ?? 0) % 1000 === 0, {
  message: 'must be a whole number of seconds (e.g. 1s, 1m, 1h)',
});

export const hostPort = z.string().superRefine((text, ctx) => {
  const parsed = parseHostPort(text);
  if ('problem' in parsed) ctx.addIssue({ code: 'custom', message: parsed.problem });
});

export const urlPath = z
  .string()
  .regex(/^\/[^\s?#*]*$/, { message: 'must be a path starting with "/" (no spaces, query, fragment or "*")' });

export const identifier = (what: string) =>
  z.string().regex(/^[a-z][a-z0-9_]*$/, { message: `${what} must be lower_snake_case (a-z, 0-9, _)` });

export const permission = z.string().regex(/^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$/, {
  message: 'a permission looks like "verb:object", e.g. read:own_profile',
});

/** An HTTP header name, lower-cased (as Envoy matches and logs it). */
export const headerName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*$/i, { message: 'must be an HTTP header name (letters, digits and "-")' })
  .transform((name) => name.toLowerCase());
