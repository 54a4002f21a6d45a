import type { Duration } from '@sekisho/proto/google/protobuf/duration';

export function durationFromMs(ms: number): Duration {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}
