// Durations in the definition are short strings ("500ms", "15s", "1m", "1h", "1d"), the way
// people write them in YAML; the same parser reads them in every service's environment.
export { parseDuration } from '@sekisho/service-kit/duration';

export const durationFormatHint = 'must be a duration like 500ms, 30s, 1m, 1h or 1d';
