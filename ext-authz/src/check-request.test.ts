import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Address } from '@sekisho/proto/envoy/config/core/v3/address';
import { Metadata } from '@sekisho/proto/envoy/config/core/v3/base';
import {
  AttributeContext_Peer,
  AttributeContext_TLSSession,
} from '@sekisho/proto/envoy/service/auth/v3/attribute_context';
import { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import { Timestamp } from '@sekisho/proto/google/protobuf/timestamp';
import { authzContextKeys } from '@sekisho/service-kit/contract';
import { describe, expect, it } from 'vitest';
import { type CheckRequestView, decodeCheckRequestView, viewOfCheckRequest } from './check-request';

// The hand-written CheckRequest decoder against the generated one (followed by the conversion
// Check made of its result before): on requests Envoy writes, on random well-formed ones, on
// random wire layouts (unknown fields of every wire type, known fields with another wire type,
// repeated sub-messages, early end-group and zero tags), on every truncation of those, and on
// random corruption. A fixed seed: every run is the same run.

/** mulberry32: small, seeded, good enough to pick test inputs. */
function random(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)] as T;
  const chance = (p: number) => next() < p;
  return { next, int, pick, chance };
}
type Random = ReturnType<typeof random>;

const headerNames = [
  ':authority',
  ':method',
  ':path',
  ':scheme',
  'authorization',
  'accept-language',
  'user-agent',
  'x-request-id',
  'x-forwarded-for',
  'x-envoy-external-address',
  'x-sekisho-client-ip',
  'x-sekisho-user-id',
  'x-sekisho-anything',
  'x-device-id',
  'X-Mixed-Case',
  'AUTHORIZATION',
  '__proto__',
  'constructor',
  'toString',
  '123',
  '7',
  'ünïcode',
];

const textPieces = [
  'abc',
  'Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln',
  'ja,en;q=0.8',
  '203.0.113.7',
  '2001:db8::1',
  '',
  ' ',
  ',',
  'é',
  '日本語',
  '😀',
  '\uFEFFbom first',
  '\u0000nul',
  '\ud800lone',
  'x'.repeat(40),
];

function text(rng: Random): string {
  let out = '';
  const parts = rng.int(4);
  for (let i = 0; i < parts; i++) out += rng.pick(textPieces);
  return out;
}

/** Bytes that are not always UTF-8: a header's raw_value. */
function rawBytes(rng: Random): Buffer {
  if (rng.chance(0.5)) return Buffer.alloc(0);
  if (rng.chance(0.5)) return Buffer.from(text(rng));
  return Buffer.from(
    Array.from({ length: rng.int(12) }, () => rng.pick([0x41, 0x7f, 0x80, 0xc3, 0xa9, 0xef, 0xbb, 0xbf, 0xff, 0x00])),
  );
}

function peer(rng: Random) {
  return {
    ...(rng.chance(0.8)
      ? {
          address: rng.chance(0.8)
            ? {
                socketAddress: {
                  address: rng.pick(['203.0.113.7', '10.0.0.1', '::1', '', text(rng)]),
                  portValue: rng.int(65536),
                },
              }
            : { pipe: { path: '/tmp/sock', mode: 0 } },
        }
      : {}),
    ...(rng.chance(0.3) ? { principal: rng.pick(['spiffe://salon.test/ns/a/sa/b', '', text(rng)]) } : {}),
    ...(rng.chance(0.3) ? { service: text(rng) } : {}),
    ...(rng.chance(0.3) ? { labels: { app: text(rng), [text(rng)]: text(rng) } } : {}),
    ...(rng.chance(0.2) ? { certificate: text(rng) } : {}),
  };
}

/** A random CheckRequest in the generated types' own terms (well-formed by construction). */
function randomCheckRequest(rng: Random): CheckRequest {
  const headers: Record<string, string> = {};
  for (let i = rng.int(12); i > 0; i--) headers[rng.pick(headerNames)] = text(rng);
  const headerMap = Array.from({ length: rng.chance(0.5) ? rng.int(12) : 0 }, () => ({
    key: rng.pick(headerNames),
    value: text(rng),
    rawValue: rawBytes(rng),
  }));
  const extensions: Record<string, string> = {};
  const contextKeys = [...Object.values(authzContextKeys), '__proto__', 'other'];
  for (let i = rng.int(8); i > 0; i--) extensions[rng.pick(contextKeys)] = text(rng);
  return CheckRequest.fromPartial({
    ...(rng.chance(0.95)
      ? {
          attributes: {
            ...(rng.chance(0.9) ? { source: peer(rng) } : {}),
            ...(rng.chance(0.7) ? { destination: peer(rng) } : {}),
            ...(rng.chance(0.95)
              ? {
                  request: {
                    ...(rng.chance(0.7) ? { time: new Date(1_700_000_000_000 + rng.int(1e9)) } : {}),
                    ...(rng.chance(0.95)
                      ? {
                          http: {
                            id: rng.chance(0.8) ? String(rng.int(1e12)) : '',
                            method: rng.pick(['GET', 'POST', '', 'DELETE']),
                            headers,
                            ...(headerMap.length > 0 || rng.chance(0.1) ? { headerMap: { headers: headerMap } } : {}),
                            path: rng.pick(['/api/v1/customer/profile', '/a?b=c', '', text(rng)]),
                            host: text(rng),
                            scheme: rng.pick(['http', 'https']),
                            query: text(rng),
                            fragment: text(rng),
                            size: rng.int(1e6),
                            protocol: rng.pick(['HTTP/1.1', 'HTTP/2']),
                            body: text(rng),
                            rawBody: rawBytes(rng),
                          },
                        }
                      : {}),
                  },
                }
              : {}),
            contextExtensions: extensions,
            ...(rng.chance(0.4)
              ? {
                  metadataContext: {
                    filterMetadata: {
                      'envoy.filters.http.jwt_authn': { sub: text(rng), n: rng.int(100), ok: true, list: [1, 'a'] },
                    },
                  },
                }
              : {}),
            ...(rng.chance(0.3) ? { routeMetadataContext: { filterMetadata: { sekisho: { route: text(rng) } } } } : {}),
            ...(rng.chance(0.3) ? { tlsSession: { sni: text(rng) } } : {}),
          },
        }
      : {}),
  });
}

// ---------------------------------------------------------------------------------------
// Random wire layouts: the messages Check reads written field by field, with what a decoder
// must step over mixed in. Each writer returns the message's bytes.

type Bytes = Uint8Array;

const writer = () => new BinaryWriter();
const len = (w: BinaryWriter, field: number, bytes: Bytes) => w.uint32((field << 3) | 2).bytes(bytes);
const str = (w: BinaryWriter, field: number, value: string) => w.uint32((field << 3) | 2).string(value);

/** Fields no message on Check's path has (numbers 50–2049), of every wire type, groups nested. */
function unknownField(rng: Random, w: BinaryWriter, depth = 0): void {
  const field = 50 + rng.int(2000);
  switch (rng.int(depth < 2 ? 5 : 4)) {
    case 0:
      w.uint32(field << 3).uint64(BigInt(rng.int(2 ** 31)) * BigInt(rng.int(2 ** 31)));
      break;
    case 1:
      w.uint32((field << 3) | 1).fixed64(rng.int(2 ** 31));
      break;
    case 2:
      w.uint32((field << 3) | 5).fixed32(rng.int(2 ** 31));
      break;
    case 3:
      len(w, field, Buffer.from(text(rng)));
      break;
    default:
      w.uint32((field << 3) | 3);
      for (let i = rng.int(3); i > 0; i--) unknownField(rng, w, depth + 1);
      w.uint32((field << 3) | 4);
  }
}

/** A known field number written with another wire type: both decoders skip it. */
function wrongWireType(rng: Random, w: BinaryWriter, field: number): void {
  if (rng.chance(0.5)) w.uint32(field << 3).uint32(rng.int(1000));
  else w.uint32((field << 3) | 5).fixed32(rng.int(1000));
}

/**
 * Writes the fields in a random order with extras; sometimes ends the message early with an
 * end-group or a zero tag followed by fields only the parent would skip (the generated decoder
 * stops the message there and the parent reads on: so must this one).
 */
function message(rng: Random, fields: Array<(w: BinaryWriter) => void>, knownNumbers: number[]): Bytes {
  const w = writer();
  const order = [...fields];
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j] as (w: BinaryWriter) => void, order[i] as (w: BinaryWriter) => void];
  }
  for (const write of order) {
    if (rng.chance(0.2)) unknownField(rng, w);
    if (rng.chance(0.1)) wrongWireType(rng, w, rng.pick(knownNumbers));
    write(w);
  }
  if (rng.chance(0.2)) unknownField(rng, w);
  if (rng.chance(0.05)) {
    w.uint32(rng.chance(0.5) ? 0 : (1 << 3) | 4);
    for (let i = rng.int(3); i > 0; i--) unknownField(rng, w);
  }
  return w.finish();
}

const times = (rng: Random, max: number) => rng.int(max + 1);

function wireStringEntry(rng: Random, key: string, value: string): Bytes {
  const fields: Array<(w: BinaryWriter) => void> = [];
  if (rng.chance(0.95)) fields.push((w) => str(w, 1, key));
  if (rng.chance(0.95)) fields.push((w) => str(w, 2, value));
  return message(rng, fields, [1, 2]);
}

function wireHeaderValue(rng: Random): Bytes {
  const fields: Array<(w: BinaryWriter) => void> = [];
  for (let i = times(rng, 2); i > 0; i--) fields.push((w) => str(w, 1, rng.pick(headerNames)));
  for (let i = times(rng, 2); i > 0; i--) fields.push((w) => str(w, 2, text(rng)));
  for (let i = times(rng, 1); i > 0; i--) fields.push((w) => len(w, 3, rawBytes(rng)));
  return message(rng, fields, [1, 2, 3]);
}

function wireHttp(rng: Random): Bytes {
  const fields: Array<(w: BinaryWriter) => void> = [];
  for (let i = times(rng, 2); i > 0; i--) fields.push((w) => str(w, 1, text(rng)));
  for (let i = times(rng, 2); i > 0; i--) fields.push((w) => str(w, 2, rng.pick(['GET', 'POST', ''])));
  for (let i = times(rng, 10); i > 0; i--)
    fields.push((w) => len(w, 3, wireStringEntry(rng, rng.pick(headerNames), text(rng))));
  for (let i = times(rng, 2); i > 0; i--) fields.push((w) => str(w, 4, rng.pick(['/p', '/q?x=1', text(rng)])));
  for (let i = times(rng, 2); i > 0; i--) {
    fields.push((w) => {
      const entries: Array<(w: BinaryWriter) => void> = [];
      for (let j = times(rng, 8); j > 0; j--) entries.push((inner) => len(inner, 1, wireHeaderValue(rng)));
      len(w, 13, message(rng, entries, [1]));
    });
  }
  // What Check never reads, written well-formed: host, size, raw_body.
  if (rng.chance(0.5)) fields.push((w) => str(w, 6, text(rng)));
  if (rng.chance(0.5)) fields.push((w) => w.uint32(10 << 3).int64(rng.int(1e9)));
  if (rng.chance(0.5)) fields.push((w) => len(w, 12, rawBytes(rng)));
  return message(rng, fields, [1, 2, 3, 4, 13]);
}

function wirePeer(rng: Random): Bytes {
  const fields: Array<(w: BinaryWriter) => void> = [];
  for (let i = times(rng, 2); i > 0; i--) {
    fields.push((w) => {
      const socket = () =>
        message(
          rng,
          [
            ...(rng.chance(0.9)
              ? [(inner: BinaryWriter) => str(inner, 2, rng.pick(['203.0.113.9', '', text(rng)]))]
              : []),
            (inner: BinaryWriter) => inner.uint32(3 << 3).uint32(rng.int(65536)),
          ],
          [2],
        );
      const address: Array<(w: BinaryWriter) => void> = [];
      for (let j = times(rng, 2); j > 0; j--) address.push((inner) => len(inner, 1, socket()));
      if (rng.chance(0.2))
        address.push((inner) =>
          len(
            inner,
            2,
            Address.encode({ pipe: { path: '/s', mode: 0 } })
              .finish()
              .subarray(2),
          ),
        );
      len(w, 1, message(rng, address, [1]));
    });
  }
  for (let i = times(rng, 2); i > 0; i--)
    fields.push((w) => str(w, 4, rng.pick(['spiffe://salon.test/x', '', text(rng)])));
  if (rng.chance(0.3)) fields.push((w) => str(w, 2, text(rng)));
  return message(rng, fields, [1, 4]);
}

function wireCheckRequest(rng: Random): Bytes {
  const attributes = () => {
    const fields: Array<(w: BinaryWriter) => void> = [];
    for (let i = times(rng, 2); i > 0; i--) fields.push((w) => len(w, 1, wirePeer(rng)));
    for (let i = times(rng, 2); i > 0; i--) {
      fields.push((w) => {
        const request: Array<(w: BinaryWriter) => void> = [];
        for (let j = times(rng, 2); j > 0; j--) request.push((inner) => len(inner, 2, wireHttp(rng)));
        if (rng.chance(0.5))
          request.push((inner) => len(inner, 1, Timestamp.encode({ seconds: 1_700_000_000, nanos: 5 }).finish()));
        len(w, 4, message(rng, request, [2]));
      });
    }
    const keys = [...Object.values(authzContextKeys), '__proto__'];
    for (let i = times(rng, 8); i > 0; i--)
      fields.push((w) => len(w, 10, wireStringEntry(rng, rng.pick(keys), text(rng))));
    // Skipped by this decoder, decoded by the generated one: written well-formed.
    if (rng.chance(0.5))
      fields.push((w) =>
        len(w, 2, AttributeContext_Peer.encode(AttributeContext_Peer.fromPartial(peer(rng))).finish()),
      );
    if (rng.chance(0.3)) {
      fields.push((w) =>
        len(
          w,
          11,
          Metadata.encode(
            Metadata.fromPartial({ filterMetadata: { a: { b: text(rng), c: [1, true, null] } } }),
          ).finish(),
        ),
      );
    }
    if (rng.chance(0.3))
      fields.push((w) =>
        len(w, 13, Metadata.encode(Metadata.fromPartial({ filterMetadata: { r: { s: text(rng) } } })).finish()),
      );
    if (rng.chance(0.3))
      fields.push((w) => len(w, 12, AttributeContext_TLSSession.encode({ sni: text(rng) }).finish()));
    return message(rng, fields, [1, 4, 10]);
  };
  const fields: Array<(w: BinaryWriter) => void> = [];
  for (let i = times(rng, 2); i > 0; i--) fields.push((w) => len(w, 1, attributes()));
  return message(rng, fields, [1]);
}

// ---------------------------------------------------------------------------------------

type Outcome = { ok: true; view: CheckRequestView } | { ok: false; error: unknown };

function attempt(decode: () => CheckRequestView): Outcome {
  try {
    return { ok: true, view: decode() };
  } catch (error) {
    return { ok: false, error };
  }
}

const generated = (bytes: Uint8Array) => attempt(() => viewOfCheckRequest(CheckRequest.decode(bytes)));
const handWritten = (bytes: Uint8Array) => attempt(() => decodeCheckRequestView(bytes));

/** Equal on every field, the headers' key order and prototype too (headersToRemove iterates them). */
function expectSameView(actual: CheckRequestView, expected: CheckRequestView): void {
  expect(actual).toEqual(expected);
  expect(Object.keys(actual.headers)).toEqual(Object.keys(expected.headers));
  expect(Object.keys(actual.contextExtensions)).toEqual(Object.keys(expected.contextExtensions));
  expect(Object.getPrototypeOf(actual.headers)).toBe(null);
}

function expectSameOutcome(bytes: Uint8Array): Outcome {
  const expected = generated(bytes);
  const actual = handWritten(bytes);
  // Twice: the second time the context extensions may come from the decoder's run cache.
  const again = handWritten(bytes);
  if (expected.ok) {
    expect(actual.ok, 'the generated decoder read it').toBe(true);
    expect(again.ok).toBe(true);
    if (actual.ok) expectSameView(actual.view, expected.view);
    if (again.ok) expectSameView(again.view, expected.view);
  } else {
    expect(again.ok).toBe(false);
    expect(actual.ok, `the generated decoder refused it: ${String(expected.error)}`).toBe(false);
  }
  return actual;
}

describe('decodeCheckRequestView', () => {
  it('reads what Envoy sends (a gateway Check and a sidecar mTLS one) as the generated decoder does', () => {
    const gateway = CheckRequest.fromPartial({
      attributes: {
        source: { address: { socketAddress: { address: '203.0.113.7', portValue: 51234 } } },
        destination: { address: { socketAddress: { address: '10.0.0.5', portValue: 8080 } } },
        request: {
          time: new Date('2026-12-02T01:02:03.456Z'),
          http: {
            id: '15839420817312645678',
            method: 'GET',
            headers: {
              ':authority': 'api.salon.test',
              ':path': '/api/v1/customer/profile?x=1',
              ':method': 'GET',
              ':scheme': 'https',
              authorization: 'Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1In0.c2ln',
              'user-agent': 'curl/8.5.0',
              accept: '*/*',
              'accept-language': 'ja,en;q=0.8',
              'x-forwarded-proto': 'https',
              'x-request-id': '2f6a7a3e-5f2b-4c1d-9a1e-1b2c3d4e5f60',
              'x-sekisho-client-ip': '203.0.113.7',
              'x-sekisho-user-id': 'forged',
            },
            path: '/api/v1/customer/profile?x=1',
            host: 'api.salon.test',
            scheme: 'https',
            protocol: 'HTTP/1.1',
          },
        },
        contextExtensions: {
          [authzContextKeys.routeId]: 'profile',
          [authzContextKeys.permissions]: 'read:own_profile',
          [authzContextKeys.auth]: 'required',
          [authzContextKeys.maxRequestHeaders]: '100',
          [authzContextKeys.maxRequestHeaderBytes]: '61440',
        },
        metadataContext: {},
        routeMetadataContext: {},
      },
    });
    const sidecar = CheckRequest.fromPartial({
      attributes: {
        source: {
          address: { socketAddress: { address: '10.0.0.9', portValue: 40000 } },
          principal: 'spiffe://salon.test/ns/salon/sa/customer',
          certificate: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
        },
        destination: { principal: 'spiffe://salon.test/ns/salon/sa/booking' },
        request: {
          http: {
            id: '1',
            method: 'POST',
            headerMap: {
              headers: [
                { key: ':path', value: '', rawValue: Buffer.from('/bookings') },
                { key: 'x-sekisho-user-id', value: '', rawValue: Buffer.from('user-1') },
                { key: 'cookie', value: 'a=1', rawValue: Buffer.alloc(0) },
                { key: 'cookie', value: '', rawValue: Buffer.from('b=2') },
              ],
            },
          },
        },
        contextExtensions: { [authzContextKeys.meshTrustDomain]: 'salon.test' },
        tlsSession: { sni: 'booking.salon.test' },
      },
    });
    for (const request of [gateway, sidecar]) {
      const bytes = CheckRequest.encode(request).finish();
      const view = decodeCheckRequestView(bytes);
      expectSameView(view, viewOfCheckRequest(CheckRequest.decode(bytes)));
    }
    const view = decodeCheckRequestView(CheckRequest.encode(sidecar).finish());
    expect(view.headers.cookie).toBe('a=1,b=2');
    expect(view.headerSize).toEqual({ count: 4, bytes: 5 + 9 + 17 + 6 + 6 + 3 + 6 + 3 });
    expect(view.principal).toBe('spiffe://salon.test/ns/salon/sa/customer');
  });

  it('reads 2,000 random well-formed CheckRequests exactly as the generated decoder does', () => {
    const rng = random(0x5e5e);
    for (let i = 0; i < 2000; i++) expectSameOutcome(CheckRequest.encode(randomCheckRequest(rng)).finish());
  });

  it('reads 2,000 random wire layouts (unknown fields, wrong wire types, repeats, early ends) exactly as it does', () => {
    const rng = random(0xc0ffee);
    let read = 0;
    for (let i = 0; i < 2000; i++) if (expectSameOutcome(wireCheckRequest(rng)).ok) read++;
    // Most of them are readable: the comparison is of two results, not of two refusals.
    expect(read).toBeGreaterThan(1900);
  });

  it('refuses every truncation the generated decoder refuses, and reads every other one the same', () => {
    const rng = random(7);
    let refused = 0;
    for (let i = 0; i < 60; i++) {
      const bytes = i % 2 === 0 ? CheckRequest.encode(randomCheckRequest(rng)).finish() : wireCheckRequest(rng);
      for (let cut = 0; cut < bytes.length; cut++) if (!expectSameOutcome(bytes.subarray(0, cut)).ok) refused++;
    }
    expect(refused).toBeGreaterThan(1000);
  });

  it('never crashes on corrupted bytes: a view or an Error, nothing else', () => {
    const rng = random(99);
    let views = 0;
    let errors = 0;
    for (let i = 0; i < 3000; i++) {
      const bytes = Buffer.from(
        i % 2 === 0 ? CheckRequest.encode(randomCheckRequest(rng)).finish() : wireCheckRequest(rng),
      );
      for (let flips = 1 + rng.int(4); flips > 0 && bytes.length > 0; flips--)
        bytes[rng.int(bytes.length)] = rng.int(256);
      const outcome = handWritten(bytes);
      if (outcome.ok) {
        views++;
        expect(Object.getPrototypeOf(outcome.view.headers)).toBe(null);
        for (const value of Object.values(outcome.view.headers)) expect(typeof value).toBe('string');
      } else {
        errors++;
        expect(outcome.error).toBeInstanceOf(Error);
      }
    }
    expect(views).toBeGreaterThan(0);
    expect(errors).toBeGreaterThan(0);
  });

  it.each([
    ['a length past the end', [0x0a, 0x05, 0x22, 0x01]],
    ['a varint of eleven bytes', [0x0a, ...Array(10).fill(0xff), 0x01]],
    ['wire type 6', [0x0e, 0x00]],
    ['wire type 7', [0x0f]],
    ['a string cut short', [0x0a, 0x04, 0x22, 0x02, 0x12, 0x05]],
    ['a group that never ends', [0x0a, 0x02, 0x0b, 0x08]],
    ['groups nested 200 deep', [0x0a, 0x90, 0x03, ...Array(200).fill(0x0b), ...Array(200).fill(0x0c)]],
  ])('refuses %s, as the generated decoder does', (_name, bytes) => {
    const input = Uint8Array.from(bytes);
    expect(generated(input).ok).toBe(false);
    expect(() => decodeCheckRequestView(input)).toThrow(Error);
  });

  it('takes a route context seen before from its bytes, and still reads what follows it', () => {
    const entries = (extensions: Record<string, string>) =>
      CheckRequest.encode(CheckRequest.fromPartial({ attributes: { contextExtensions: extensions } }))
        .finish()
        .subarray(2);
    const route = { [authzContextKeys.routeId]: 'profile', [authzContextKeys.permissions]: 'read:own_profile' };
    const run = entries(route);
    const attributes = (...parts: Uint8Array[]) => {
      const body = Buffer.concat(parts);
      return Buffer.concat([Buffer.from([0x0a, body.length]), body]);
    };
    const principal = Buffer.from([0x0a, 0x04, 0x22, 0x02, 0x70, 0x31]); // source { principal: "p1" }
    const first = decodeCheckRequestView(attributes(run));
    const second = decodeCheckRequestView(attributes(run));
    expect(second.contextExtensions).toBe(first.contextExtensions);
    expect(Object.isFrozen(second.contextExtensions)).toBe(true);
    // The same run, then another field and another entry: the shared map is copied, not changed.
    const extra = entries({ [authzContextKeys.auth]: 'none', [authzContextKeys.routeId]: 'other' });
    for (const bytes of [
      attributes(run),
      attributes(run, principal, extra),
      attributes(principal, run, extra),
      attributes(extra, run),
      attributes(run, run),
    ]) {
      expectSameOutcome(bytes);
    }
    expect(first.contextExtensions).toEqual(route);
    // A run that passes the end of its AttributeContext is read as the generated decoder reads it.
    const cut = Buffer.concat([Buffer.from([0x0a, run.length - 3]), run]);
    expectSameOutcome(cut);
    expectSameOutcome(cut);
  });

  it('reads an empty request as no attributes at all', () => {
    expectSameOutcome(new Uint8Array(0));
    expect(decodeCheckRequestView(new Uint8Array(0))).toMatchObject({
      id: '',
      path: '',
      sourceAddress: '',
      headerSize: undefined,
    });
  });
});
