// HPACK (RFC 7541) for a server: a full decoder (static and dynamic tables, size updates,
// Huffman) with limits, and an encoder of plain literals for the few header sets a gRPC server
// answers with. Strings are latin1 (one JS char per octet), so lengths are octet counts.

import { staticTable } from './hpack-tables';
import { HuffmanError, huffmanDecode } from './huffman';

/** A COMPRESSION_ERROR: the block cannot be decoded, so the connection's table state is lost. */
export class HpackError extends Error {}

const entryOverhead = 32;
const staticLength = staticTable.length;

/** Where decoded fields go: a reused list the caller reads before the next block. */
export class HeaderList {
  names: string[] = [];
  values: string[] = [];
  count = 0;
  /** Octets of the list as RFC 9113 §6.5.2 counts them (name + value + 32 per field). */
  size = 0;
  /** Set when the list passed the limit: fields after it were decoded but not kept. */
  tooLarge = false;

  reset() {
    this.count = 0;
    this.size = 0;
    this.tooLarge = false;
  }
}

export class HpackDecoder {
  /** The size limit we advertised (SETTINGS_HEADER_TABLE_SIZE): size updates may not exceed it. */
  readonly maxAllowedSize: number;
  /** The table size in force (the last size update, at most maxAllowedSize). */
  maxSize: number;
  size = 0;
  // The dynamic table as a ring: entry 0 (HPACK index 62) is the newest.
  private names: string[];
  private values: string[];
  private start = 0;
  private length = 0;

  constructor(maxAllowedSize = 4096) {
    this.maxAllowedSize = maxAllowedSize;
    this.maxSize = maxAllowedSize;
    const capacity = Math.floor(maxAllowedSize / entryOverhead) + 1;
    this.names = new Array<string>(capacity).fill('');
    this.values = new Array<string>(capacity).fill('');
  }

  get tableLength(): number {
    return this.length;
  }

  /**
   * Decodes one whole header block into `out` (reset first). Fields past `maxListSize` are
   * decoded (the table must stay in step with the peer's) but not kept, and `out.tooLarge` set.
   * Throws HpackError on anything malformed.
   */
  decode(block: Buffer, out: HeaderList, maxListSize: number, start = 0, end = block.length): void {
    out.reset();
    let pos = start;
    let fieldSeen = false;
    while (pos < end) {
      const first = block[pos] as number;
      if (first & 0x80) {
        // Indexed field.
        const [index, next] = readInteger(block, pos, end, 7);
        pos = next;
        if (index === 0) throw new HpackError('indexed field with index 0');
        this.emit(out, this.nameAt(index), this.valueAt(index), maxListSize);
        fieldSeen = true;
      } else if (first & 0x40) {
        // Literal with incremental indexing.
        const [index, next] = readInteger(block, pos, end, 6);
        pos = next;
        let name: string;
        if (index === 0) {
          [name, pos] = readString(block, pos, end);
        } else {
          name = this.nameAt(index);
        }
        let value: string;
        [value, pos] = readString(block, pos, end);
        this.insert(name, value);
        this.emit(out, name, value, maxListSize);
        fieldSeen = true;
      } else if (first & 0x20) {
        // Dynamic table size update: only before the block's first field (§4.2).
        if (fieldSeen) throw new HpackError('dynamic table size update after a header field');
        const [size, next] = readInteger(block, pos, end, 5);
        pos = next;
        if (size > this.maxAllowedSize) {
          throw new HpackError(`dynamic table size update to ${size} exceeds the limit of ${this.maxAllowedSize}`);
        }
        this.maxSize = size;
        this.evictTo(size);
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const [index, next] = readInteger(block, pos, end, 4);
        pos = next;
        let name: string;
        if (index === 0) {
          [name, pos] = readString(block, pos, end);
        } else {
          name = this.nameAt(index);
        }
        let value: string;
        [value, pos] = readString(block, pos, end);
        this.emit(out, name, value, maxListSize);
        fieldSeen = true;
      }
    }
  }

  private emit(out: HeaderList, name: string, value: string, maxListSize: number) {
    out.size += name.length + value.length + entryOverhead;
    if (out.size > maxListSize) {
      out.tooLarge = true;
      return;
    }
    const n = out.count++;
    out.names[n] = name;
    out.values[n] = value;
  }

  private nameAt(index: number): string {
    if (index <= staticLength) return (staticTable[index - 1] as readonly [string, string])[0];
    return this.names[this.slot(index)] as string;
  }

  private valueAt(index: number): string {
    if (index <= staticLength) return (staticTable[index - 1] as readonly [string, string])[1];
    return this.values[this.slot(index)] as string;
  }

  private slot(index: number): number {
    const i = index - staticLength - 1;
    if (i >= this.length) throw new HpackError(`header index ${index} is not in the table`);
    const capacity = this.names.length;
    return (this.start + this.length - 1 - i + capacity) % capacity;
  }

  private insert(name: string, value: string) {
    const entrySize = name.length + value.length + entryOverhead;
    // An entry larger than the table empties it and is not added (§4.4).
    if (entrySize > this.maxSize) {
      this.evictTo(0);
      return;
    }
    this.evictTo(this.maxSize - entrySize);
    const capacity = this.names.length;
    const at = (this.start + this.length) % capacity;
    this.names[at] = name;
    this.values[at] = value;
    this.length++;
    this.size += entrySize;
  }

  private evictTo(size: number) {
    const capacity = this.names.length;
    while (this.size > size && this.length > 0) {
      const at = this.start;
      this.size -= (this.names[at] as string).length + (this.values[at] as string).length + entryOverhead;
      this.names[at] = '';
      this.values[at] = '';
      this.start = (at + 1) % capacity;
      this.length--;
    }
  }
}

// Integers past 2^28 are no header length or index a sane peer sends; refusing them keeps the
// arithmetic in small integers.
const maxInteger = 1 << 28;
const intResult: [number, number] = [0, 0];

/** Reads an N-bit-prefix integer (§5.1) at pos: [value, next position] (a reused pair). */
function readInteger(buf: Buffer, pos: number, end: number, prefixBits: number): [number, number] {
  const mask = (1 << prefixBits) - 1;
  let value = (buf[pos] as number) & mask;
  pos++;
  if (value === mask) {
    let shift = 0;
    for (;;) {
      if (pos >= end) throw new HpackError('truncated integer');
      const byte = buf[pos++] as number;
      value += (byte & 0x7f) * 2 ** shift;
      if (value > maxInteger) throw new HpackError('integer too large');
      if ((byte & 0x80) === 0) break;
      shift += 7;
    }
  }
  intResult[0] = value;
  intResult[1] = pos;
  return intResult;
}

const stringResult: [string, number] = ['', 0];

/** Reads a string literal (§5.2) at pos: [latin1 text, next position] (a reused pair). */
function readString(buf: Buffer, pos: number, blockEnd: number): [string, number] {
  if (pos >= blockEnd) throw new HpackError('truncated string');
  const huffman = ((buf[pos] as number) & 0x80) !== 0;
  const [length, start] = readInteger(buf, pos, blockEnd, 7);
  const end = start + length;
  if (end > blockEnd) throw new HpackError('string runs past the end of the block');
  let text: string;
  if (huffman) {
    text = length <= cachedMaxLength ? cachedHuffman(buf, start, end) : huffmanDecodeOrThrow(buf, start, end);
  } else {
    text = buf.toString('latin1', start, end);
  }
  stringResult[0] = text;
  stringResult[1] = end;
  return stringResult;
}

function huffmanDecodeOrThrow(buf: Buffer, start: number, end: number): string {
  try {
    return huffmanDecode(buf, start, end - start);
  } catch (error) {
    if (error instanceof HuffmanError) throw new HpackError(error.message);
    throw error;
  }
}

// Values a peer never indexes come Huffman-coded on every request, the same bytes each time
// (nghttp2 and Envoy never index `:path`): the last few short ones decoded, by their coded
// bytes, spare the decode and a new string. Shared by every connection (strings are immutable).
const cachedMaxLength = 96;
const cacheSize = 16;
const cacheKeys: Buffer[] = Array.from({ length: cacheSize }, () => Buffer.alloc(0));
const cacheValues: string[] = new Array<string>(cacheSize).fill('');
let cacheNext = 0;

function cachedHuffman(buf: Buffer, start: number, end: number): string {
  const length = end - start;
  for (let i = 0; i < cacheSize; i++) {
    const key = cacheKeys[i] as Buffer;
    if (key.length === length && buf.compare(key, 0, length, start, end) === 0) return cacheValues[i] as string;
  }
  const text = huffmanDecodeOrThrow(buf, start, end);
  const slot = cacheNext;
  cacheNext = (cacheNext + 1) % cacheSize;
  cacheKeys[slot] = Buffer.from(buf.subarray(start, end));
  cacheValues[slot] = text;
  return text;
}

// The encoder side: literal fields without indexing (§6.2.2), so the peer's table is never
// touched and a block can be built once and reused. Names found in the static table are
// referenced by index.

const staticNameIndex = new Map<string, number>();
staticTable.forEach(([name], i) => {
  if (!staticNameIndex.has(name)) staticNameIndex.set(name, i + 1);
});

function pushInteger(out: number[], value: number, prefixBits: number, flags: number) {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  let rest = value - max;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
}

function pushString(out: number[], text: Buffer) {
  pushInteger(out, text.length, 7, 0);
  for (const byte of text) out.push(byte);
}

/**
 * A header block of the given fields: `:status 200` as its static index, every other field
 * a literal without indexing. Values are written as their UTF-8 octets (callers percent-encode
 * what must be ASCII).
 */
export function encodeHeaderBlock(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    if (name === ':status' && value === '200') {
      out.push(0x88);
      continue;
    }
    const index = staticNameIndex.get(name);
    if (index === undefined) {
      out.push(0);
      pushString(out, Buffer.from(name, 'latin1'));
    } else {
      pushInteger(out, index, 4, 0);
    }
    pushString(out, Buffer.from(value, 'utf8'));
  }
  return Buffer.from(out);
}

/** A dynamic table size update (§6.3): what an encoder sends after the peer shrinks its table. */
export function encodeTableSizeUpdate(size: number): Buffer {
  const out: number[] = [];
  pushInteger(out, size, 5, 0x20);
  return Buffer.from(out);
}
