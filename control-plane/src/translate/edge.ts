// Edge hardening shared by the listener, route and cluster translators.

/**
 * Limits of Envoy's "Configuring Envoy as an edge proxy" best practices, in one place.
 * Envoy's defaults are tuned for a service mesh, where clients are trusted.
 */
export const edgeLimits = {
  /** Bytes buffered per connection (listener and upstream): bounds memory per slow client. */
  connectionBufferBytes: 32 * 1024,
  /** Slow-loris: all request headers within 10 s. */
  requestHeadersTimeoutMs: 10_000,
  /** A whole request (headers and body) within 60 s: a JSON API has no long uploads. */
  requestTimeoutMs: 60_000,
  /** No bytes either way for 5 min ends the stream (also bounds a silent upstream). */
  streamIdleTimeoutMs: 300_000,
  /** HTTP/2 (h2c prior knowledge reaches a plain-HTTP listener too): one client's share. */
  http2: { maxConcurrentStreams: 100, initialStreamWindowSize: 65_536, initialConnectionWindowSize: 1_048_576 },
} as const;

/** Response headers that only tell an attacker what runs behind the gateway. */
export const revealingResponseHeaders = ['server', 'x-powered-by'] as const;
