// A raw HTTP/2 client for tests: frames written and read by hand over a TCP socket, for the
// inputs no real client produces (malformed, hostile, or at exact window boundaries).

import { connect, type Socket } from 'node:net';
import { FrameType, frameHeaderLength, preface } from './frames';
import { encodeHeaderBlock, HeaderList, HpackDecoder } from './hpack';

export interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

export class RawPeer {
  readonly frames: Frame[] = [];
  /** Resolves once the server has closed the connection. */
  readonly closed: Promise<void>;
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private readonly decoder = new HpackDecoder();
  private ended = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= frameHeaderLength) {
        const length = this.buf.readUIntBE(0, 3);
        if (this.buf.length < frameHeaderLength + length) break;
        this.frames.push({
          type: this.buf[3] as number,
          flags: this.buf[4] as number,
          id: this.buf.readUInt32BE(5) & 0x7fffffff,
          payload: Buffer.from(this.buf.subarray(frameHeaderLength, frameHeaderLength + length)),
        });
        this.buf = this.buf.subarray(frameHeaderLength + length);
      }
      this.wake?.();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  /** Connects; with `handshake`, sends the preface and an empty (or the given) SETTINGS. */
  static async connect(port: number, settings: Array<[number, number]> | null = []): Promise<RawPeer> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const peer = new RawPeer(socket);
    if (settings !== null) {
      peer.write(preface);
      peer.settings(settings);
    }
    return peer;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  send(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): void {
    this.write(frame(type, flags, id, payload));
  }

  settings(settings: Array<[number, number]>): void {
    const payload = Buffer.alloc(settings.length * 6);
    settings.forEach(([key, value], i) => {
      payload.writeUInt16BE(key, i * 6);
      payload.writeUInt32BE(value, i * 6 + 2);
    });
    this.send(FrameType.SETTINGS, 0, 0, payload);
  }

  /** The first frame (after `from`) that matches; fails if the connection closes first. */
  async next(match: (f: Frame) => boolean, from = 0): Promise<Frame> {
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found) return found;
      if (this.ended) throw new Error('the connection closed before a matching frame came');
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  async count(match: (f: Frame) => boolean, n: number): Promise<void> {
    for (;;) {
      if (this.frames.filter(match).length >= n) return;
      if (this.ended) throw new Error(`the connection closed with ${this.frames.filter(match).length} of ${n} frames`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  /** The GOAWAY the server sent, as [last stream id, error code, debug text], once it closed. */
  async goaway(): Promise<[number, number, string]> {
    const f = await this.next((x) => x.type === FrameType.GOAWAY);
    return [f.payload.readUInt32BE(0), f.payload.readUInt32BE(4), f.payload.subarray(8).toString('latin1')];
  }

  /** Decodes a HEADERS payload the server sent (it sends no padding or priority). */
  headers(payload: Buffer): Record<string, string> {
    const list = new HeaderList();
    this.decoder.decode(payload, list, 1 << 20);
    return Object.fromEntries(list.names.slice(0, list.count).map((n, i) => [n, list.values[i] as string]));
  }

  close(): void {
    this.socket.destroy();
  }
}

export function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(frameHeaderLength);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(id, 5);
  return Buffer.concat([head, payload]);
}

/** A gRPC request's header block for `path` (literals; `extra` fields after the usual ones). */
export function requestBlock(path: string, extra: Array<[string, string]> = []): Buffer {
  return encodeHeaderBlock([
    [':method', 'POST'],
    [':scheme', 'http'],
    [':path', path],
    [':authority', 'test'],
    ['content-type', 'application/grpc'],
    ['te', 'trailers'],
    ...extra,
  ]);
}

/** One length-prefixed gRPC message. */
export function grpcMessage(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}
