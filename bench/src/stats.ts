// Latency percentiles from per-request samples (nearest-rank on the sorted samples).

export interface LatencySummary {
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
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
