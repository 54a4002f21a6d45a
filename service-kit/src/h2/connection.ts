// The server side of one HTTP/2 connection (RFC 9113) over a plaintext socket with prior
// knowledge: what gRPC unary and server-streaming calls need, and refusals for the rest. It
// parses frames in place (offsets into the socket's chunks, no copy but of a frame split across
// reads), keeps HPACK, stream states and both directions' flow control, and hands a
// StreamHandler the request streams; everything it writes goes through one FrameWriter.

import type { Socket } from 'node:net';
import {
  defaultMaxFrameSize,
  defaultWindow,
  ErrorCode,
  Flag,
  FrameType,
  FrameWriter,
  frameHeaderLength,
  maxAllowedFrameSize,
  maxWindow,
  preface,
  Setting,
} from './frames';
import { encodeTableSizeUpdate, HeaderList, HpackDecoder, HpackError } from './hpack';
import { StreamTable } from './stream-table';

export interface ConnectionOptions {
  /** SETTINGS_MAX_CONCURRENT_STREAMS: streams past it are refused (REFUSED_STREAM). */
  maxConcurrentStreams: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE: the window we grant each stream. */
  initialWindowSize: number;
  /** The connection window we open (WINDOW_UPDATE on stream 0 after our SETTINGS). */
  connectionWindowSize: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE: a larger request is answered 431. */
  maxHeaderListSize: number;
  /** A header block (HEADERS and its CONTINUATIONs) larger than this is a connection error. */
  maxHeaderBlockSize: number;
  /** Streams the peer may reset per second before the connection is closed (rapid reset). */
  maxResetsPerSecond: number;
  /** Socket bytes waiting for the peer past which we stop reading from it until it drains. */
  maxSocketBacklog: number;
}

export const defaultConnectionOptions: ConnectionOptions = {
  maxConcurrentStreams: 1_000,
  initialWindowSize: 1 << 20,
  connectionWindowSize: 16 << 20,
  maxHeaderListSize: 64 * 1024,
  maxHeaderBlockSize: 64 * 1024,
  maxResetsPerSecond: 1_000,
  maxSocketBacklog: 4 << 20,
};

/** What the server does with the streams a connection accepts. */
export interface StreamHandler {
  /** A new request's headers; `headers` is reused after the call returns. */
  onRequest(stream: H2Stream, headers: HeaderList, endStream: boolean): void;
  /**
   * Request body bytes: buf[start, end) of the read buffer (no view made: the handler makes one
   * only if it keeps the bytes), empty with the end of a stream ended by trailers.
   */
  onData(stream: H2Stream, buf: Buffer, start: number, end: number, endStream: boolean): void;
  /** The stream is gone; `reset` unless both sides ended it normally. Called once. */
  onClose(stream: H2Stream, reset: boolean): void;
}

export class H2Stream {
  /** The server's object for this stream (its call). */
  user: unknown = undefined;
  sendWindow: number;
  /** Bytes received since the last WINDOW_UPDATE for this stream. */
  unacked = 0;
  recvWindow: number;
  headersSent = false;
  localEnded = false;
  remoteEnded = false;
  closed = false;
  /** Data waiting for flow-control window, then the trailers that follow it. */
  queue: Buffer[] | null = null;
  queuedTrailers: Buffer | null = null;

  constructor(
    readonly id: number,
    readonly connection: Connection,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }
}

/** A connection error: GOAWAY with this code, then the socket is closed. */
class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

const emptyBuffer = Buffer.alloc(0);
const connectionHeaders = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);
const pseudoHeaders = new Set([':method', ':scheme', ':path', ':authority']);
const tooLargeBlock = Buffer.from([0x08, 0x03, 0x34, 0x33, 0x31]); // :status 431, literal without indexing

export class Connection {
  readonly writer: FrameWriter;
  readonly streams = new StreamTable<H2Stream>();
  /** Highest stream id the peer opened: the last-stream-id of our GOAWAY. */
  lastStreamId = 0;
  /** When (ms) the input started waiting for the rest of a frame or header block; 0 when not. */
  stalledSince: number;
  closed = false;
  goawaySent = false;
  /** Request bytes the server holds for this connection's calls (its own account, see unary-grpc-server). */
  heldBytes = 0;

  private readonly decoder = new HpackDecoder();
  private readonly headers = new HeaderList();
  private leftover: Buffer | null = null;
  private prefaceSeen = false;
  private peerGoaway = false;
  // The peer's settings that bind what we send.
  private peerMaxFrameSize = defaultMaxFrameSize;
  private peerInitialWindow = defaultWindow;
  private sendTableSizeUpdate = false;
  // Flow control: what the peer lets us send on the connection; what we let it send.
  private connSendWindow = defaultWindow;
  private connRecvWindow: number;
  private connUnacked = 0;
  private readonly blocked = new Set<H2Stream>();
  // A header block being continued: its stream, END_STREAM flag and parts so far.
  private continuing = 0;
  private continuingEnd = false;
  private blockParts: Buffer[] = [];
  private blockBytes = 0;
  // Rapid reset: peer resets counted per one-second window.
  private resetWindowStart = 0;
  private resets = 0;
  private paused = false;
  /** A stream that named itself as its own dependency: refused once its block is decoded. */
  private resetIdLater = 0;

  constructor(
    readonly socket: Socket,
    private readonly handler: StreamHandler,
    private readonly options: ConnectionOptions,
  ) {
    this.writer = new FrameWriter(socket);
    this.connRecvWindow = options.connectionWindowSize;
    this.stalledSince = Date.now();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.on('close', () => this.lost());
    socket.on('drain', () => {
      if (this.paused) {
        this.paused = false;
        socket.resume();
      }
    });
    // A broken connection is the client's problem; it must never reach 'uncaughtException'.
    socket.on('error', () => {});
    this.writeSettings();
  }

  private writeSettings() {
    const w = this.writer;
    const settings: Array<[number, number]> = [
      [Setting.ENABLE_PUSH, 0],
      [Setting.MAX_CONCURRENT_STREAMS, this.options.maxConcurrentStreams],
      [Setting.INITIAL_WINDOW_SIZE, this.options.initialWindowSize],
      [Setting.MAX_FRAME_SIZE, defaultMaxFrameSize],
      [Setting.MAX_HEADER_LIST_SIZE, this.options.maxHeaderListSize],
    ];
    w.header(settings.length * 6, FrameType.SETTINGS, 0, 0);
    for (const [id, value] of settings) {
      w.uint16(id);
      w.uint32(value);
    }
    const increment = this.options.connectionWindowSize - defaultWindow;
    if (increment > 0) {
      w.header(4, FrameType.WINDOW_UPDATE, 0, 0);
      w.uint32(increment);
    }
  }

  // --- reading ---------------------------------------------------------------------------

  private read(chunk: Buffer) {
    if (this.closed) return;
    // A peer that sends but does not read (answers, PING ACKs) is read no more until it does.
    this.checkBacklog();
    let buf = chunk;
    if (this.leftover) {
      buf = Buffer.concat([this.leftover, chunk]);
      this.leftover = null;
    }
    let pos = 0;
    let progressed = false;
    try {
      if (!this.prefaceSeen) {
        const n = Math.min(buf.length, preface.length);
        if (buf.compare(preface, 0, n, 0, n) !== 0) {
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'invalid connection preface');
        }
        if (buf.length < preface.length) {
          this.leftover = Buffer.from(buf);
          return;
        }
        this.prefaceSeen = true;
        pos = preface.length;
      }
      const end = buf.length;
      while (end - pos >= frameHeaderLength) {
        const length = (buf[pos] as number) * 65536 + (buf[pos + 1] as number) * 256 + (buf[pos + 2] as number);
        if (length > defaultMaxFrameSize) {
          throw new ConnectionError(
            ErrorCode.FRAME_SIZE_ERROR,
            `frame of ${length} bytes exceeds SETTINGS_MAX_FRAME_SIZE`,
          );
        }
        const frameEnd = pos + frameHeaderLength + length;
        if (frameEnd > end) break;
        const type = buf[pos + 3] as number;
        const flags = buf[pos + 4] as number;
        const id = buf.readUInt32BE(pos + 5) & 0x7fffffff;
        this.frame(type, flags, id, buf, pos + frameHeaderLength, frameEnd);
        if (this.closed) return;
        pos = frameEnd;
        progressed = true;
      }
    } catch (error) {
      // A protocol error, or a bug under a frame's handling: either way the connection goes,
      // never the process (this runs in the socket's 'data' listener).
      if (error instanceof ConnectionError) this.fail(error.code, error.message);
      else this.fail(ErrorCode.INTERNAL_ERROR, 'internal error');
      return;
    }
    // Copied, so a large read is not kept alive by the few bytes of a frame still to come.
    if (pos < buf.length) this.leftover = Buffer.from(buf.subarray(pos));
    // The stall clock runs while a frame or header block is incomplete, from the last whole frame.
    if (this.leftover === null && this.continuing === 0) this.stalledSince = 0;
    else if (progressed || this.stalledSince === 0) this.stalledSince = Date.now();
  }

  private frame(type: number, flags: number, id: number, buf: Buffer, start: number, end: number) {
    if (this.continuing !== 0 && type !== FrameType.CONTINUATION) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'a header block was interrupted by another frame');
    }
    switch (type) {
      case FrameType.DATA:
        this.onData(flags, id, buf, start, end);
        return;
      case FrameType.HEADERS:
        this.onHeaders(flags, id, buf, start, end);
        return;
      case FrameType.CONTINUATION:
        this.onContinuation(flags, id, buf, start, end);
        return;
      case FrameType.PRIORITY:
        if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (end - start !== 5) this.resetId(id, ErrorCode.FRAME_SIZE_ERROR);
        return;
      case FrameType.RST_STREAM:
        this.onRstStream(id, end - start);
        return;
      case FrameType.SETTINGS:
        this.onSettings(flags, id, buf, start, end);
        return;
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      case FrameType.PING:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'PING on a stream');
        if (end - start !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'PING payload is not 8 bytes');
        if ((flags & Flag.ACK) === 0) this.writer.frame(FrameType.PING, Flag.ACK, 0, buf, start, end);
        return;
      case FrameType.GOAWAY:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (end - start < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'GOAWAY shorter than 8 bytes');
        this.peerGoaway = true;
        if (this.streams.size === 0) this.end();
        return;
      case FrameType.WINDOW_UPDATE:
        this.onWindowUpdate(id, buf, start, end);
        return;
      default:
        // Unknown frame types are ignored (RFC 9113 §4.1).
        return;
    }
  }

  private onData(flags: number, id: number, buf: Buffer, start: number, end: number) {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'DATA on stream 0');
    const length = end - start;
    // The whole frame, padding included, counts against both windows.
    this.connRecvWindow -= length;
    if (this.connRecvWindow < 0) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    }
    this.connUnacked += length;
    if (this.connUnacked >= this.options.connectionWindowSize >>> 1) {
      this.writeWindowUpdate(0, this.connUnacked);
      this.connRecvWindow += this.connUnacked;
      this.connUnacked = 0;
    }
    let dataEnd = end;
    let dataStart = start;
    if (flags & Flag.PADDED) {
      if (length < 1) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'padded DATA without a pad length');
      const pad = buf[start] as number;
      if (pad >= length) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'DATA padding exceeds the frame');
      dataStart = start + 1;
      dataEnd = end - pad;
    }
    const stream = this.streams.get(id);
    if (stream === undefined) {
      if (id > this.lastStreamId) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      // A stream we already closed (answered early, or reset): its late data is dropped.
      return;
    }
    if (stream.remoteEnded) {
      this.reset(stream, ErrorCode.STREAM_CLOSED);
      return;
    }
    stream.recvWindow -= length;
    if (stream.recvWindow < 0) {
      this.reset(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (endStream) {
      stream.remoteEnded = true;
    } else {
      stream.unacked += length;
      if (stream.unacked >= this.options.initialWindowSize >>> 1) {
        this.writeWindowUpdate(id, stream.unacked);
        stream.recvWindow += stream.unacked;
        stream.unacked = 0;
      }
    }
    this.handler.onData(stream, buf, dataStart, dataEnd, endStream);
    if (endStream) this.maybeClose(stream);
  }

  private onHeaders(flags: number, id: number, buf: Buffer, start: number, end: number) {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'HEADERS on stream 0');
    let fragStart = start;
    let fragEnd = end;
    if (flags & Flag.PADDED) {
      if (end - start < 1) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'padded HEADERS without a pad length');
      const pad = buf[start] as number;
      fragStart++;
      fragEnd -= pad;
    }
    if (flags & Flag.PRIORITY) {
      const dependency = fragStart + 4 <= end ? buf.readUInt32BE(fragStart) & 0x7fffffff : -1;
      fragStart += 5;
      if (dependency === id) this.resetIdLater = id;
    }
    if (fragEnd < fragStart) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'HEADERS padding exceeds the frame');
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (flags & Flag.END_HEADERS) {
      this.headerBlock(id, endStream, buf, fragStart, fragEnd);
      return;
    }
    this.continuing = id;
    this.continuingEnd = endStream;
    this.blockParts = [Buffer.from(buf.subarray(fragStart, fragEnd))];
    this.blockBytes = fragEnd - fragStart;
  }

  private onContinuation(flags: number, id: number, buf: Buffer, start: number, end: number) {
    if (this.continuing === 0 || id !== this.continuing) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION without a header block to continue');
    }
    this.blockBytes += end - start;
    if (this.blockBytes > this.options.maxHeaderBlockSize) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, 'header block too large');
    }
    this.blockParts.push(Buffer.from(buf.subarray(start, end)));
    if ((flags & Flag.END_HEADERS) === 0) return;
    const block = Buffer.concat(this.blockParts);
    this.blockParts = [];
    this.continuing = 0;
    this.headerBlock(id, this.continuingEnd, block, 0, block.length);
  }

  private headerBlock(id: number, endStream: boolean, block: Buffer, start: number, end: number) {
    const headers = this.headers;
    try {
      this.decoder.decode(block, headers, this.options.maxHeaderListSize, start, end);
    } catch (error) {
      if (error instanceof HpackError) throw new ConnectionError(ErrorCode.COMPRESSION_ERROR, error.message);
      throw error;
    }
    const existing = this.streams.get(id);
    if (existing !== undefined) {
      // Trailers: they must end the stream.
      if (existing.remoteEnded) this.reset(existing, ErrorCode.STREAM_CLOSED);
      else if (!endStream) this.reset(existing, ErrorCode.PROTOCOL_ERROR);
      else {
        existing.remoteEnded = true;
        this.handler.onData(existing, emptyBuffer, 0, 0, true);
        this.maybeClose(existing);
      }
      return;
    }
    if (id % 2 === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `client stream id ${id} is even`);
    if (id <= this.lastStreamId) {
      throw new ConnectionError(
        ErrorCode.PROTOCOL_ERROR,
        `stream id ${id} does not increase past ${this.lastStreamId}`,
      );
    }
    this.lastStreamId = id;
    // After our GOAWAY, newer streams are ignored (the peer retries them elsewhere).
    if (this.goawaySent) return;
    if (this.resetIdLater === id) {
      this.resetIdLater = 0;
      this.resetId(id, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    if (this.peerGoaway || this.streams.size >= this.options.maxConcurrentStreams) {
      this.resetId(id, ErrorCode.REFUSED_STREAM);
      return;
    }
    if (headers.tooLarge) {
      this.writeHeaders(id, tooLargeBlock, true);
      if (!endStream) this.resetId(id, ErrorCode.NO_ERROR);
      return;
    }
    if (!wellFormed(headers)) {
      this.resetId(id, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    const stream = new H2Stream(id, this, this.peerInitialWindow, this.options.initialWindowSize);
    stream.remoteEnded = endStream;
    this.streams.set(id, stream);
    this.handler.onRequest(stream, headers, endStream);
    if (endStream) this.maybeClose(stream);
  }

  private onRstStream(id: number, length: number) {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    if (length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'RST_STREAM payload is not 4 bytes');
    if (id > this.lastStreamId) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    const now = Date.now();
    if (now - this.resetWindowStart >= 1000) {
      this.resetWindowStart = now;
      this.resets = 0;
    }
    if (++this.resets > this.options.maxResetsPerSecond) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, 'too many streams reset');
    }
    this.closeStream(stream, true);
  }

  private onSettings(flags: number, id: number, buf: Buffer, start: number, end: number) {
    if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & Flag.ACK) {
      if (end !== start) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if ((end - start) % 6 !== 0)
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS length not a multiple of 6');
    for (let p = start; p < end; p += 6) {
      const key = buf.readUInt16BE(p);
      const value = buf.readUInt32BE(p + 2);
      switch (key) {
        case Setting.HEADER_TABLE_SIZE:
          // Our blocks never index, so a table of any size fits; a smaller one than the
          // default still has to be acknowledged with a size update (RFC 7541 §4.2).
          if (value < 4096) this.sendTableSizeUpdate = true;
          break;
        case Setting.ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'SETTINGS_ENABLE_PUSH not 0 or 1');
          break;
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > maxWindow)
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE too large');
          const delta = value - this.peerInitialWindow;
          this.peerInitialWindow = value;
          for (const stream of this.streams.snapshot()) {
            stream.sendWindow += delta;
            if (stream.sendWindow > maxWindow) {
              throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'a stream window overflows');
            }
          }
          if (delta > 0) this.drainBlocked();
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          if (value < defaultMaxFrameSize || value > maxAllowedFrameSize) {
            throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value} out of range`);
          }
          this.peerMaxFrameSize = value;
          break;
        default:
          // MAX_CONCURRENT_STREAMS (we push nothing), MAX_HEADER_LIST_SIZE, unknown: nothing to do.
          break;
      }
    }
    this.writer.header(0, FrameType.SETTINGS, Flag.ACK, 0);
  }

  private onWindowUpdate(id: number, buf: Buffer, start: number, end: number) {
    if (end - start !== 4)
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'WINDOW_UPDATE payload is not 4 bytes');
    const increment = buf.readUInt32BE(start) & 0x7fffffff;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.connSendWindow += increment;
      if (this.connSendWindow > maxWindow) {
        throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'the connection window overflows');
      }
      this.drainBlocked();
      return;
    }
    if (id > this.lastStreamId)
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (increment === 0) {
      this.reset(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > maxWindow) {
      this.reset(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    if (stream.queue !== null) this.writeQueued(stream);
  }

  // --- writing ---------------------------------------------------------------------------

  /** Response headers (or a trailers-only response with `endStream`). */
  respond(stream: H2Stream, block: Buffer, endStream: boolean): void {
    if (stream.closed || stream.localEnded) return;
    stream.headersSent = true;
    this.writeHeaders(stream.id, block, endStream);
    if (endStream) this.endLocal(stream);
  }

  /** Body bytes, sent as the windows allow; the rest waits for WINDOW_UPDATE. */
  sendData(stream: H2Stream, data: Buffer): boolean {
    if (stream.closed || stream.localEnded) return false;
    if (stream.queue !== null) {
      stream.queue.push(data);
      return false;
    }
    const sent = this.writeData(stream, data);
    if (sent < data.length) {
      stream.queue = [data.subarray(sent)];
      this.blocked.add(stream);
      return false;
    }
    return true;
  }

  /** Trailers: HEADERS with END_STREAM, after any data still waiting for window. */
  sendTrailers(stream: H2Stream, block: Buffer): void {
    if (stream.closed || stream.localEnded) return;
    if (stream.queue !== null) {
      stream.queuedTrailers = block;
      return;
    }
    this.writeHeaders(stream.id, block, true);
    this.endLocal(stream);
  }

  /** RST_STREAM: the stream ends now (NO_ERROR after a complete answer: stop sending). */
  reset(stream: H2Stream, code: number): void {
    if (stream.closed) return;
    this.resetId(stream.id, code);
    this.closeStream(stream, code !== ErrorCode.NO_ERROR || !stream.localEnded);
  }

  /** GOAWAY NO_ERROR: no new streams; the socket closes when the open ones are done. */
  goaway(): void {
    if (this.closed || this.goawaySent) return;
    this.goawaySent = true;
    this.writeGoaway(ErrorCode.NO_ERROR, '');
    if (this.streams.size === 0) this.end();
  }

  destroy(): void {
    this.writer.close();
    this.socket.destroy();
    this.lost();
  }

  /** A connection error: GOAWAY with the code and a reason, then close. */
  fail(code: number, reason: string): void {
    if (this.closed) return;
    this.goawaySent = true;
    this.writeGoaway(code, reason);
    this.end();
  }

  private writeGoaway(code: number, reason: string) {
    const debug = Buffer.from(reason.slice(0, 200), 'latin1');
    this.writer.header(8 + debug.length, FrameType.GOAWAY, 0, 0);
    this.writer.uint32(this.lastStreamId);
    this.writer.uint32(code);
    if (debug.length > 0) this.writer.bytes(debug);
  }

  private writeHeaders(id: number, block: Buffer, endStream: boolean) {
    if (this.sendTableSizeUpdate) {
      this.sendTableSizeUpdate = false;
      block = Buffer.concat([encodeTableSizeUpdate(0), block]);
    }
    const w = this.writer;
    const max = this.peerMaxFrameSize;
    const end = endStream ? Flag.END_STREAM : 0;
    if (block.length <= max) {
      w.frame(FrameType.HEADERS, Flag.END_HEADERS | end, id, block);
      return;
    }
    w.frame(FrameType.HEADERS, end, id, block, 0, max);
    for (let p = max; p < block.length; p += max) {
      const last = p + max >= block.length;
      w.frame(FrameType.CONTINUATION, last ? Flag.END_HEADERS : 0, id, block, p, Math.min(p + max, block.length));
    }
  }

  private writeWindowUpdate(id: number, increment: number) {
    this.writer.header(4, FrameType.WINDOW_UPDATE, 0, id);
    this.writer.uint32(increment);
  }

  private resetId(id: number, code: number) {
    this.writer.header(4, FrameType.RST_STREAM, 0, id);
    this.writer.uint32(code);
  }

  /** Writes as much of data as the windows allow; returns how much. */
  private writeData(stream: H2Stream, data: Buffer): number {
    let sent = 0;
    const total = data.length;
    while (sent < total) {
      const room = Math.min(this.connSendWindow, stream.sendWindow, this.peerMaxFrameSize, total - sent);
      if (room <= 0) break;
      this.writer.frame(FrameType.DATA, 0, stream.id, data, sent, sent + room);
      this.connSendWindow -= room;
      stream.sendWindow -= room;
      sent += room;
    }
    this.checkBacklog();
    return sent;
  }

  private writeQueued(stream: H2Stream) {
    const queue = stream.queue;
    if (queue === null) return;
    while (queue.length > 0) {
      const head = queue[0] as Buffer;
      const sent = this.writeData(stream, head);
      if (sent < head.length) {
        queue[0] = head.subarray(sent);
        return;
      }
      queue.shift();
    }
    stream.queue = null;
    this.blocked.delete(stream);
    if (stream.queuedTrailers !== null) {
      const trailers = stream.queuedTrailers;
      stream.queuedTrailers = null;
      this.writeHeaders(stream.id, trailers, true);
      this.endLocal(stream);
    }
  }

  private drainBlocked() {
    for (const stream of this.blocked) {
      if (this.connSendWindow <= 0) return;
      this.writeQueued(stream);
    }
  }

  private checkBacklog() {
    if (!this.paused && this.writer.socketBacklog > this.options.maxSocketBacklog) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private endLocal(stream: H2Stream) {
    stream.localEnded = true;
    this.maybeClose(stream);
  }

  private maybeClose(stream: H2Stream) {
    if (stream.localEnded && stream.remoteEnded) this.closeStream(stream, false);
  }

  private closeStream(stream: H2Stream, reset: boolean) {
    if (stream.closed) return;
    stream.closed = true;
    stream.queue = null;
    this.streams.delete(stream.id);
    this.blocked.delete(stream);
    this.handler.onClose(stream, reset);
    if ((this.goawaySent || this.peerGoaway) && this.streams.size === 0) this.end();
  }

  /** Sends what is queued, then ends the socket. */
  private end() {
    if (this.closed) return;
    this.writer.flush();
    this.writer.close();
    this.socket.end();
    // A peer that never closes its side is not waited for.
    setTimeout(() => this.socket.destroy(), 5_000).unref();
    this.lost();
  }

  private lost() {
    if (this.closed) return;
    this.closed = true;
    this.writer.close();
    this.leftover = null;
    for (const stream of this.streams.snapshot()) this.closeStream(stream, true);
  }
}

/** RFC 9113 §8.2–8.3: lowercase names, pseudo-headers first and known, none of HTTP/1's connection headers. */
function wellFormed(headers: HeaderList): boolean {
  let regular = false;
  let method = false;
  let path = false;
  let scheme = false;
  for (let i = 0; i < headers.count; i++) {
    const name = headers.names[i] as string;
    if (name.length === 0) return false;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular || !pseudoHeaders.has(name)) return false;
      if (name === ':method') {
        if (method) return false;
        method = true;
      } else if (name === ':path') {
        if (path || headers.values[i] === '') return false;
        path = true;
      } else if (name === ':scheme') {
        if (scheme) return false;
        scheme = true;
      }
      continue;
    }
    regular = true;
    for (let c = 0; c < name.length; c++) {
      const code = name.charCodeAt(c);
      if (code >= 0x41 && code <= 0x5a) return false;
    }
    if (connectionHeaders.has(name)) return false;
    if (name === 'te' && headers.values[i] !== 'trailers') return false;
  }
  return method && path && scheme;
}
