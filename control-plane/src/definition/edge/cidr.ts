// CIDR ranges (IPv4 and IPv6) as the edge rules write them: "203.0.113.0/24", "2001:db8::/32",
// or a bare address meaning exactly that address.
import { isIP } from 'node:net';
import { z } from 'zod';

export interface Cidr {
  address: string;
  prefixLen: number;
}

export function parseCidr(text: string): Cidr | { problem: string } {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const family = isIP(address);
  if (family === 0)
    return { problem: `must be an IPv4 or IPv6 address or CIDR range (e.g. 203.0.113.0/24), got "${text}"` };
  const max = family === 4 ? 32 : 128;
  if (slash === -1) return { address, prefixLen: max };
  const prefix = text.slice(slash + 1);
  const prefixLen = /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
  if (!(prefixLen >= 0 && prefixLen <= max)) {
    return { problem: `the prefix length of an IPv${family} range is 0–${max}, got "${text}"` };
  }
  return { address, prefixLen };
}

export const cidr = z.string().superRefine((text, ctx) => {
  const parsed = parseCidr(text);
  if ('problem' in parsed) ctx.addIssue({ code: 'custom', message: parsed.problem });
});
