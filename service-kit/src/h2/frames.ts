// HTTP/2 framing (RFC 9113 §4, §6): frame types, flags, error codes and settings, and the
// writer that gathers the frames of one event-loop turn into one socket write.

import type { Socket } from 'node:net';

export const frameHeaderLength = 9;
export const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

export const defaultMaxFrameSize = 16_384;
export const maxAllowedFrameSize = 16_777_215;
export const defaultWindow = 65_535;
export const maxWindow = 2 ** 31 - 1;

/** Payloads at least this long go to the socket as they are, not copied into the slab. */
const copyLimit = 2048;
const slabSize = 64 * 1024;

/**
 * Frames are written into a slab; a turn's frames leave in one write (several buffers go as one
 * writev under cork) from setImmediate, so the answers to every request read in one turn share a
 * syscall. A written part of the slab is never overwritten (the socket may still hold it): the
 * next frames go after it, and a full slab is replaced by a new one.
 */
export class FrameWriter {
  private slab = Buffer.allocUnsafe(slabSize);
  private pos = 0;
  /** Where the part not yet handed to `parts` starts. */
  private mark = 0;
  private parts: Buffer[] = [];
  private scheduled = false;
  private closed = false;

  constructor(private readonly socket: Socket) {}

  /** Bytes queued in the socket that the peer has not taken yet (backpressure). */
  get socketBacklog(): number {
    return this.socket.writableLength;
  }

  /** A frame header, and room for `reserve` more payload bytes after it in the slab. */
  header(length: number, type: number, flags: number, streamId: number, reserve = 0): void {
    this.ensure(frameHeaderLength + reserve);
    const s = this.slab;
    const p = this.pos;
    s[p] = length >>> 16;
    s[p + 1] = (length >>> 8) & 0xff;
    s[p + 2] = length & 0xff;
    s[p + 3] = type;
    s[p + 4] = flags;
    s.writeUInt32BE(streamId, p + 5);
    this.pos = p + frameHeaderLength;
    this.schedule();
  }

  uint32(value: number): void {
    this.ensure(4);
    this.slab.writeUInt32BE(value >>> 0, this.pos);
    this.pos += 4;
  }

  uint16(value: number): void {
    this.ensure(2);
    this.slab.writeUInt16BE(value, this.pos);
    this.pos += 2;
  }

  bytes(data: Uint8Array, start = 0, end = data.length): void {
    const length = end - start;
    if (length >= copyLimit) {
      this.cut();
      this.parts.push(Buffer.from(data.buffer, data.byteOffset + start, length));
      return;
    }
    this.ensure(length);
    this.slab.set(data.subarray(start, end), this.pos);
    this.pos += length;
  }

  /** A whole frame: header and payload. */
  frame(type: number, flags: number, streamId: number, payload: Uint8Array, start = 0, end = payload.length): void {
    const length = end - start;
    this.header(length, type, flags, streamId, length < copyLimit ? length : 0);
    if (length > 0) this.bytes(payload, start, end);
  }

  /** Writes what is queued now (the end of the turn, or before the socket is ended). */
  flush = (): void => {
    this.scheduled = false;
    if (this.closed) return;
    this.cut();
    const parts = this.parts;
    if (parts.length === 0) return;
    if (parts.length === 1) {
      this.socket.write(parts[0] as Buffer);
    } else {
      this.socket.cork();
      for (const part of parts) this.socket.write(part);
      this.socket.uncork();
    }
    parts.length = 0;
  };

  /** Drops whatever is queued and writes nothing more. */
  close(): void {
    this.closed = true;
    this.parts.length = 0;
  }

  private schedule() {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  private cut() {
    if (this.pos > this.mark) {
      this.parts.push(this.slab.subarray(this.mark, this.pos));
      this.mark = this.pos;
    }
  }

  private ensure(n: number) {
    if (this.slab.length - this.pos >= n) return;
    this.cut();
    this.slab = Buffer.allocUnsafe(Math.max(slabSize, n));
    this.pos = 0;
    this.mark = 0;
  }
}
