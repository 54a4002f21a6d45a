import { describe, expect, it } from 'vitest';
import { LogThrottle } from './log-throttle';

describe('LogThrottle', () => {
  it('lets a burst through per key and interval, then reports how many it dropped', () => {
    let now = 0;
    const throttle = new LogThrottle({ burst: 2, intervalMs: 1000, clock: () => now });
    expect(throttle.take('a')).toEqual({ suppressed: 0 });
    expect(throttle.take('a')).toEqual({ suppressed: 0 });
    expect(throttle.take('a')).toBeUndefined();
    expect(throttle.take('a')).toBeUndefined();
    expect(throttle.take('b')).toEqual({ suppressed: 0 });
    now = 1000;
    expect(throttle.take('a')).toEqual({ suppressed: 2 });
    expect(throttle.take('a')).toEqual({ suppressed: 0 });
  });
});
