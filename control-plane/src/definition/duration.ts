// Durations in the definition are short strings ("500ms", "15s", "1m", "1h", "1d"), the way
// people write them in YAML. One parser for the schema (validation) and the IR (conversion).

const durationPattern = /^(\d{1,9})(ms|s|m|h|d)$/;

const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Milliseconds, or undefined when the text is not `<n>ms|s|m|h|d`. */
export function parseDuration(text: string): number | undefined {
  const match = durationPattern.exec(text);
  if (!match) return undefined;
  const [, amount, unit] = match;
  return Number(amount) * unitMs[unit as keyof typeof unitMs];
}

export const durationFormatHint = 'must be a duration like 500ms, 30s, 1m, 1h or 1d';
