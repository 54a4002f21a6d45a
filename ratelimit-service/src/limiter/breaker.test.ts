import { describe, expect, it } from 'vitest';
import { type BreakerState, CircuitBreaker } from './breaker';

describe('CircuitBreaker', () => {
  const setup = () => {
    let now = 0;
    const changes: BreakerState[] = [];
    const breaker = new CircuitBreaker({
      failureThreshold: 3,
      openMs: 1000,
      clock: () => now,
      onChange: (to) => changes.push(to),
    });
    return { breaker, changes, advance: (ms: number) => (now += ms) };
  };

  it('opens after the threshold of consecutive failures, not before', () => {
    const { breaker, changes } = setup();
    breaker.failure();
    breaker.failure();
    expect(breaker.state).toBe('closed');
    expect(breaker.acquire()).toEqual({ allowed: true, probe: false });
    breaker.failure();
    expect(breaker.state).toBe('open');
    expect(breaker.acquire()).toEqual({ allowed: false, probe: false });
    expect(changes).toEqual(['open']);
  });

  it('starts the count again after a success', () => {
    const { breaker } = setup();
    breaker.failure();
    breaker.failure();
    breaker.success();
    breaker.failure();
    breaker.failure();
    expect(breaker.state).toBe('closed');
  });

  it('lets one probe through after openMs and closes when it succeeds', () => {
    const { breaker, changes, advance } = setup();
    for (let i = 0; i < 3; i++) breaker.failure();
    advance(999);
    expect(breaker.acquire().allowed).toBe(false);
    advance(1);
    expect(breaker.acquire()).toEqual({ allowed: true, probe: true });
    expect(breaker.state).toBe('half_open');
    // Only one probe at a time: the others are still answered without Redis.
    expect(breaker.acquire().allowed).toBe(false);
    breaker.success();
    expect(breaker.state).toBe('closed');
    expect(breaker.acquire()).toEqual({ allowed: true, probe: false });
    expect(changes).toEqual(['open', 'half_open', 'closed']);
  });

  it('opens again for openMs when the probe fails', () => {
    const { breaker, advance } = setup();
    for (let i = 0; i < 3; i++) breaker.failure();
    advance(1000);
    expect(breaker.acquire().probe).toBe(true);
    breaker.failure();
    expect(breaker.state).toBe('open');
    advance(500);
    expect(breaker.acquire().allowed).toBe(false);
    advance(500);
    expect(breaker.acquire().probe).toBe(true);
  });

  it('probes at once after probeSoon (Redis reconnected)', () => {
    const { breaker } = setup();
    for (let i = 0; i < 3; i++) breaker.failure();
    breaker.probeSoon();
    expect(breaker.acquire()).toEqual({ allowed: true, probe: true });
  });

  it.each([
    [{ failureThreshold: 0, openMs: 1 }, 'failureThreshold'],
    [{ failureThreshold: 1.5, openMs: 1 }, 'failureThreshold'],
    [{ failureThreshold: 1, openMs: 0 }, 'openMs'],
  ])('refuses %j, naming the option', (opts, name) => {
    expect(() => new CircuitBreaker(opts)).toThrow(name);
  });
});
