// Latency percentiles from per-request samples (nearest-rank on the sorted samples).

export interface LatencySummary {
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
}

/** The median of unsorted values (the mean of the middle two when their number is even). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  return Number.isInteger(mid)
    ? ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
    : (sorted[Math.floor(mid)] as number);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  // The epsilon keeps 99.9 % of 1000 at rank 999 despite floating point (999.0000000000001).
  const rank = Math.ceil((p * sorted.length) / 100 - 1e-9);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export function summarizeLatencies(samplesMs: number[]): LatencySummary {
  const sorted = Float64Array.from(samplesMs).sort();
  const arr = Array.from(sorted);
  const round = (v: number) => Math.round(v * 1000) / 1000;
  return {
    p50_ms: round(percentile(arr, 50)),
    p99_ms: round(percentile(arr, 99)),
    p999_ms: round(percentile(arr, 99.9)),
    max_ms: round(arr.at(-1) ?? Number.NaN),
  };
}

export interface RssSample {
  t_s: number;
  rss_mb: number;
}

/** bench:soak's verdict: every RSS sample after the first tenth of the run within ±10 % of their median. */
export function flatness(samples: RssSample[], durationS: number) {
  const steady = samples.filter((s) => s.t_s >= durationS / 10).map((s) => s.rss_mb);
  const sorted = [...steady].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
  const min = sorted[0] ?? 0;
  const max = sorted[sorted.length - 1] ?? 0;
  const deviation = median === 0 ? 0 : Math.max(max / median - 1, 1 - min / median);
  return {
    median_mb: median,
    min_mb: min,
    max_mb: max,
    max_deviation_pct: Math.round(deviation * 1000) / 10,
    flat: deviation <= 0.1,
  };
}
