import { isAscii } from 'node:buffer';
import type { CheckRequest } from '@sekisho/proto/envoy/service/auth/v3/external_auth';
import type { HeaderSize } from './decision';

// What Check reads of Envoy's CheckRequest, decoded straight from the wire. The generated
// ts-proto decoder builds the whole message: both peers with their addresses and labels, the
// request time, every request header as an entry object in a map (then copied into another
// map here), the metadata contexts as Struct trees, the TLS session. Check reads eight things,
// so this decoder keeps those and steps over everything else by its length.
//
// On what it keeps it is exactly the generated decoder followed by the old conversion
// (`viewOfCheckRequest`, which tests and the grpc-js fallback use): the same reader rules
// (varints, bounds, an end-group or zero tag ending a message, a field with another wire type
// skipped, a repeated sub-message replacing the earlier one, map entries last-wins, a map key
// `__proto__` dropped as the generated plain-object map drops it), the same UTF-8 decoding.
// check-request.test.ts compares the two on random and real requests. What differs is only
// inside fields Check never reads: they are stepped over, not parsed, so a malformed one the
// generated decoder would refuse (a bad varint, a length running past its parent) is not
// looked at. Truncated or malformed input in what it does read throws, and the transport
// answers INTERNAL ("request message could not be decoded"), as with the generated decoder.

/** Check's view of a CheckRequest. */
export interface CheckRequestView {
  /**
   * The request headers, names lower-case, with no prototype: `headers` (duplicates already
   * comma-joined by Envoy) and `header_map` (one entry per header; duplicates comma-joined here).
   */
  headers: Record<string, string>;
  /** Entries and bytes of `header_map` (encode_raw_headers); undefined without one. */
  headerSize: HeaderSize | undefined;
  /** The route's context_extensions (what the control plane wrote for the route). */
  contextExtensions: Record<string, string>;
  /** attributes.request.http.id, method, path ('' when absent). */
  id: string;
  method: string;
  path: string;
  /** attributes.source.address.socket_address.address ('' when absent). */
  sourceAddress: string;
  /** attributes.source.principal: a sidecar's verified peer ('' when absent). */
  principal: string;
}

type HttpRequest = NonNullable<NonNullable<NonNullable<CheckRequest['attributes']>['request']>['http']>;

/** The view of a CheckRequest the generated decoder made: what Check read before this decoder. */
export function viewOfCheckRequest(request: CheckRequest): CheckRequestView {
  const attributes = request.attributes;
  const http = attributes?.request?.http;
  return {
    headers: requestHeaders(http),
    headerSize: headerMapSize(http),
    contextExtensions: attributes?.contextExtensions ?? {},
    id: http?.id ?? '',
    method: http?.method ?? '',
    path: http?.path ?? '',
    sourceAddress: attributes?.source?.address?.socketAddress?.address ?? '',
    principal: attributes?.source?.principal ?? '',
  };
}

function requestHeaders(http: HttpRequest | undefined): Record<string, string> {
  const map: Record<string, string> = Object.create(null);
  if (!http) return map;
  for (const [name, value] of Object.entries(http.headers ?? {})) map[name.toLowerCase()] = value;
  for (const { key, value, rawValue } of http.headerMap?.headers ?? []) {
    const name = key.toLowerCase();
    const text = rawValue && rawValue.length > 0 ? Buffer.from(rawValue).toString('utf8') : value;
    map[name] = map[name] === undefined ? text : `${map[name]},${text}`;
  }
  return map;
}

function headerMapSize(http: HttpRequest | undefined): HeaderSize | undefined {
  const entries = http?.headerMap?.headers;
  if (!entries || entries.length === 0) return undefined;
  let bytes = 0;
  for (const { key, value, rawValue } of entries) {
    bytes += key.length + (rawValue && rawValue.length > 0 ? rawValue.length : Buffer.byteLength(value));
  }
  return { count: entries.length, bytes };
}

// ---------------------------------------------------------------------------------------
// The wire decoder. Field numbers from envoy/service/auth/v3/{external_auth,attribute_context}.proto
// and envoy/config/core/v3/{address,base}.proto (the generated code under proto/gen).

/** A position in the message being read; one per call, with the bytes as a Buffer. */
interface Reader {
  buf: Buffer;
  pos: number;
  len: number;
}

/** envoy.service.auth.v3.CheckRequest from its protobuf bytes; throws on malformed input. */
export function decodeCheckRequestView(bytes: Uint8Array): CheckRequestView {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r: Reader = { buf, pos: 0, len: buf.length };
  let attributes: Attributes | undefined;
  // CheckRequest: attributes = 1.
  while (r.pos < r.len) {
    const tag = varint32(r);
    if (tag === 10) {
      attributes = decodeAttributes(r, varint32(r));
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  const http = attributes?.request?.http;
  return {
    headers: http ? http.headers() : Object.create(null),
    headerSize: http && http.mapCount > 0 ? { count: http.mapCount, bytes: http.mapBytes } : undefined,
    contextExtensions: attributes?.contextExtensions ?? {},
    id: http?.id ?? '',
    method: http?.method ?? '',
    path: http?.path ?? '',
    sourceAddress: attributes?.source?.address ?? '',
    principal: attributes?.source?.principal ?? '',
  };
}

interface Attributes {
  source: Peer | undefined;
  request: { http: Http | undefined } | undefined;
  contextExtensions: Record<string, string>;
}

// AttributeContext: source = 1, request = 4, context_extensions = 10 (map<string, string>).
function decodeAttributes(r: Reader, length: number): Attributes {
  const end = r.pos + length;
  const message: Attributes = { source: undefined, request: undefined, contextExtensions: {} };
  // The context extensions are the same bytes on every Check of a route: see extensionRuns.
  let shared = false;
  let assigned = false;
  let pending: { key: string; start: number; end: number } | undefined;
  while (r.pos < end) {
    if (r.buf[r.pos] === 82 && !assigned) {
      const run = extensionRun(r, end);
      if (run !== undefined) {
        const known = extensionRuns.get(run.key);
        if (known !== undefined) {
          message.contextExtensions = known;
          shared = true;
          assigned = true;
          r.pos = run.end;
          continue;
        }
        pending = run;
      }
    }
    const tag = varint32(r);
    if (tag === 82) {
      decodeStringEntry(r, varint32(r));
      if (shared) {
        message.contextExtensions = { ...message.contextExtensions };
        shared = false;
      }
      // A plain object, as the generated decoder's: `__proto__` is dropped there too.
      message.contextExtensions[entryKey] = entryValue;
      assigned = true;
      if (pending !== undefined && r.pos === pending.end) {
        // The run read entry after entry to exactly its end, from an empty map: the same bytes
        // will give the same map, so the next Check of this route takes it from here.
        remember(pending.key, Object.freeze(message.contextExtensions));
        shared = true;
        pending = undefined;
      }
      continue;
    }
    pending = undefined;
    if (tag === 10) {
      message.source = decodePeer(r, varint32(r));
      continue;
    }
    if (tag === 34) {
      message.request = decodeRequest(r, varint32(r));
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  return message;
}

/**
 * context_extensions maps by the bytes of their entries: Envoy sends a route's extensions
 * unchanged with every Check, as one run of field-10 entries, so a run seen before is the
 * frozen map it decoded to, without decoding its strings again. Only a run that was read
 * entry after entry, from an empty map, to exactly where its lengths said it ends is kept
 * (so the same bytes can only decode to the same map), and only while it lies inside the
 * AttributeContext. Bounded, the oldest run going first (a new policy's routes replace the old).
 */
const extensionRuns = new Map<string, Record<string, string>>();
const maxExtensionRuns = 4096;

function remember(key: string, extensions: Record<string, string>): void {
  if (extensionRuns.size >= maxExtensionRuns) extensionRuns.delete(extensionRuns.keys().next().value as string);
  extensionRuns.set(key, extensions);
}

/**
 * The run of one-byte field-10 tags and their lengths starting at r.pos, as a key: undefined
 * when a length cannot be read or the run passes `end`. Reads only; never throws.
 */
function extensionRun(r: Reader, end: number): { key: string; start: number; end: number } | undefined {
  const buf = r.buf;
  const start = r.pos;
  let pos = start;
  while (pos < end && buf[pos] === 82) {
    pos++;
    let length = 0;
    let shift = 0;
    for (;;) {
      if (pos >= end || shift > 28) return undefined;
      const b = buf[pos++] as number;
      length += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
      shift += 7;
    }
    pos += length;
  }
  if (pos > end) return undefined;
  return { key: buf.toString('latin1', start, pos), start, end: pos };
}

interface Peer {
  address: string | undefined;
  principal: string;
}

// AttributeContext.Peer: address = 1 (Address), principal = 4.
function decodePeer(r: Reader, length: number): Peer {
  const end = r.pos + length;
  const message: Peer = { address: undefined, principal: '' };
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 10) {
      message.address = decodeAddress(r, varint32(r));
      continue;
    }
    if (tag === 34) {
      message.principal = string(r);
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  return message;
}

// envoy.config.core.v3.Address: socket_address = 1 → SocketAddress: address = 2. undefined:
// no socket address (the `?? ''` of the view), '' an empty one.
function decodeAddress(r: Reader, length: number): string | undefined {
  const end = r.pos + length;
  let address: string | undefined;
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 10) {
      address = decodeSocketAddress(r, varint32(r));
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  return address;
}

function decodeSocketAddress(r: Reader, length: number): string {
  const end = r.pos + length;
  let address = '';
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 18) {
      address = string(r);
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  return address;
}

// AttributeContext.Request: http = 2.
function decodeRequest(r: Reader, length: number): { http: Http | undefined } {
  const end = r.pos + length;
  const message: { http: Http | undefined } = { http: undefined };
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 18) {
      message.http = decodeHttp(r, varint32(r));
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  return message;
}

/**
 * AttributeContext.HttpRequest as Check needs it. `headers` (field 3) entries go into a map
 * keyed as they arrive; `header_map` (field 13; a later one replaces an earlier one) is kept as
 * a flat [name, value, name, value, …] list with its size, and both become one map at the end.
 */
class Http {
  id = '';
  method = '';
  path = '';
  /** field 3, keys as sent (Envoy sends them lower-case). */
  raw: Record<string, string> | undefined;
  /** Whether a key of `raw` changes when lower-cased (then `raw` is rebuilt in order). */
  rawNeedsLowerCase = false;
  /** field 13: lower-cased name, value, … */
  mapEntries: string[] | undefined;
  mapCount = 0;
  mapBytes = 0;

  /** The headers map Check reads: exactly what the generated decoder and requestHeaders made. */
  headers(): Record<string, string> {
    let map = this.raw;
    if (map === undefined) map = Object.create(null) as Record<string, string>;
    else if (this.rawNeedsLowerCase) {
      const lower: Record<string, string> = Object.create(null);
      for (const name in map) lower[name.toLowerCase()] = map[name] as string;
      map = lower;
    }
    const entries = this.mapEntries;
    if (entries !== undefined) {
      for (let i = 0; i < entries.length; i += 2) {
        const name = entries[i] as string;
        const text = entries[i + 1] as string;
        const known = map[name];
        map[name] = known === undefined ? text : `${known},${text}`;
      }
    }
    return map;
  }
}

// HttpRequest: id = 1, method = 2, headers = 3 (map), path = 4, header_map = 13.
function decodeHttp(r: Reader, length: number): Http {
  const end = r.pos + length;
  const message = new Http();
  while (r.pos < end) {
    const tag = varint32(r);
    switch (tag) {
      case 10:
        message.id = string(r);
        continue;
      case 18:
        message.method = string(r);
        continue;
      case 26: {
        decodeStringEntry(r, varint32(r));
        const key = entryKey;
        const value = entryValue;
        // The generated decoder writes the entry into a plain object, which ignores `__proto__`.
        if (key === '__proto__') continue;
        message.raw ??= Object.create(null) as Record<string, string>;
        message.raw[key] = value;
        if (!message.rawNeedsLowerCase && key.toLowerCase() !== key) message.rawNeedsLowerCase = true;
        continue;
      }
      case 34:
        message.path = string(r);
        continue;
      case 106:
        decodeHeaderMap(r, varint32(r), message);
        continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  return message;
}

// envoy.config.core.v3.HeaderMap: headers = 1 (repeated HeaderValue). Replaces an earlier one.
function decodeHeaderMap(r: Reader, length: number, http: Http): void {
  const end = r.pos + length;
  const entries: string[] = [];
  let bytes = 0;
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 10) {
      bytes += decodeHeaderValue(r, varint32(r), entries);
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  http.mapEntries = entries;
  http.mapCount = entries.length / 2;
  http.mapBytes = bytes;
}

// HeaderValue: key = 1, value = 2, raw_value = 3 (bytes; when not empty it is the value, UTF-8).
// Pushes the lower-cased name and the value; returns the entry's size as headerMapSize counts it.
function decodeHeaderValue(r: Reader, length: number, entries: string[]): number {
  const end = r.pos + length;
  let key = '';
  let value = '';
  let rawStart = 0;
  let rawEnd = 0;
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 10) {
      key = string(r);
      continue;
    }
    if (tag === 18) {
      value = string(r);
      continue;
    }
    if (tag === 26) {
      const size = varint32(r);
      rawStart = r.pos;
      r.pos += size;
      assertBounds(r);
      rawEnd = r.pos;
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  const rawLength = rawEnd - rawStart;
  entries.push(key.toLowerCase(), rawLength > 0 ? r.buf.toString('utf8', rawStart, rawEnd) : value);
  return key.length + (rawLength > 0 ? rawLength : Buffer.byteLength(value));
}

// The last map entry read: decodeStringEntry's result, without an array per entry.
let entryKey = '';
let entryValue = '';

// A map<string, string> entry: key = 1, value = 2, each '' when absent (into entryKey, entryValue).
function decodeStringEntry(r: Reader, length: number): void {
  const end = r.pos + length;
  let key = '';
  let value = '';
  while (r.pos < end) {
    const tag = varint32(r);
    if (tag === 10) {
      key = string(r);
      continue;
    }
    if (tag === 18) {
      value = string(r);
      continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    skip(r, tag & 7);
  }
  entryKey = key;
  entryValue = value;
}

// ---------------------------------------------------------------------------------------
// Wire primitives, with @bufbuild/protobuf's BinaryReader rules (which the generated code uses).

// What @bufbuild/protobuf's reader decodes non-ASCII strings with: replacement characters for
// invalid UTF-8, and a leading U+FEFF kept as text.
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

function assertBounds(r: Reader): void {
  if (r.pos > r.len) throw new RangeError('premature EOF');
}

/** A uint32 varint: BinaryReader's varint32read (up to 10 bytes, the high bits dropped). */
function varint32(r: Reader): number {
  const buf = r.buf;
  let b = buf[r.pos++] as number;
  if ((b & 0x80) === 0) {
    assertBounds(r);
    return b;
  }
  let result = b & 0x7f;
  b = buf[r.pos++] as number;
  result |= (b & 0x7f) << 7;
  if ((b & 0x80) === 0) {
    assertBounds(r);
    return result;
  }
  b = buf[r.pos++] as number;
  result |= (b & 0x7f) << 14;
  if ((b & 0x80) === 0) {
    assertBounds(r);
    return result;
  }
  b = buf[r.pos++] as number;
  result |= (b & 0x7f) << 21;
  if ((b & 0x80) === 0) {
    assertBounds(r);
    return result;
  }
  b = buf[r.pos++] as number;
  result |= (b & 0x0f) << 28;
  for (let read = 5; (b & 0x80) !== 0 && read < 10; read++) b = buf[r.pos++] as number;
  if ((b & 0x80) !== 0) throw new Error('invalid varint');
  assertBounds(r);
  return result >>> 0;
}

/** A length-delimited string: ASCII straight from the buffer, anything else as BinaryReader decodes it. */
function string(r: Reader): string {
  const length = varint32(r);
  const start = r.pos;
  r.pos += length;
  assertBounds(r);
  const end = r.pos;
  if (length === 0) return '';
  const buf = r.buf;
  // Short strings (header names, most values) are checked here; a byte loop beats the native
  // call's overhead up to a few dozen bytes. Longer ones (a token) natively.
  if (length <= 48) {
    for (let i = start; i < end; i++) if ((buf[i] as number) > 0x7f) return utf8.decode(buf.subarray(start, end));
    return buf.toString('latin1', start, end);
  }
  const bytes = buf.subarray(start, end);
  return isAscii(bytes) ? buf.toString('latin1', start, end) : utf8.decode(bytes);
}

/** BinaryReader.skip: the generated code calls it without a field number; nested groups pass theirs. */
function skip(r: Reader, wireType: number, fieldNo?: number, depth = 100): void {
  switch (wireType) {
    case 0:
      while ((r.buf[r.pos++] as number) & 0x80) {
        // the varint's bytes
      }
      break;
    case 1:
      r.pos += 8;
      break;
    case 5:
      r.pos += 4;
      break;
    case 2: {
      // The length first: `r.pos += varint32(r)` would add it to the position before the varint.
      const length = varint32(r);
      r.pos += length;
      break;
    }
    case 3:
      if (depth <= 0) throw new Error('maximum recursion depth reached');
      for (;;) {
        const start = r.pos;
        const tag = varint32(r);
        const read = r.pos - start;
        if (read > 5 || (read === 5 && (r.buf[r.pos - 1] as number) > 0x0f)) {
          throw new Error('illegal tag: varint overflows uint32');
        }
        const field = tag >>> 3;
        const type = tag & 7;
        if (field <= 0 || type > 5) throw new Error(`illegal tag: field no ${field} wire type ${type}`);
        if (type === 4) {
          if (fieldNo !== undefined && field !== fieldNo) throw new Error('invalid end group tag');
          break;
        }
        skip(r, type, field, depth - 1);
      }
      break;
    default:
      throw new Error(`cant skip wire type ${wireType}`);
  }
  assertBounds(r);
}
