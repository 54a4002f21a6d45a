// edge.trustedProxies: the peers (a CDN, a load balancer) whose X-Forwarded-For is believed
// for the client address. Everyone else is the client itself, whatever headers it sends.
import { z } from 'zod';
import { parseCidr } from './cidr';

/** Named sets of published ranges kept in definition/presets/. */
export const trustedProxyPresets = ['cloudflare'] as const;
export type TrustedProxyPreset = (typeof trustedProxyPresets)[number];

export function isPreset(text: string): text is TrustedProxyPreset {
  return (trustedProxyPresets as readonly string[]).includes(text);
}

const entry = z.string().superRefine((text, ctx) => {
  if (isPreset(text)) return;
  const parsed = parseCidr(text);
  if ('problem' in parsed) {
    const presets = trustedProxyPresets.map((name) => `"${name}"`).join(', ');
    ctx.addIssue({ code: 'custom', message: `${parsed.problem}; or a preset: ${presets}` });
  }
});

export const trustedProxies = z
  .union([entry, z.array(entry)])
  .transform((value) => (Array.isArray(value) ? value : [value]))
  .default([]);
