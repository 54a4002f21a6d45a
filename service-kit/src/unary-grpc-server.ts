// A lean gRPC server for unary calls on service-kit's own HTTP/2 (h2/): the hot path of the
// policy services (ext_authz Check, ShouldRateLimit), where grpc-js's per-call machinery cost
// about half of a core's throughput, and node:http2's streams and events a fifth of what was
// left (bench/README.md). It speaks just the gRPC-over-HTTP/2 that a unary call needs:
// prior-knowledge HTTP/2, length-prefixed messages, grpc-timeout deadlines and
// grpc-status/grpc-message trailers. Streaming services (ADS) stay on grpc-js.

import { EventEmitter } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { gunzip, inflate } from 'node:zlib';
import { status as grpcStatus, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { Connection, defaultConnectionOptions, type H2Stream, type StreamHandler } from './h2/connection';
import { ErrorCode } from './h2/frames';
import { encodeHeaderBlock, type HeaderList } from './h2/hpack';

/** What a unary handler is given: the decoded request, and whether the client has gone. */
export interface UnaryCall<Req> {
  readonly request: Req;
  /** True once the client cancelled or the deadline passed: nothing more will be sent. */
  readonly cancelled: boolean;
  /** The call's deadline (ms since the epoch), Infinity without grpc-timeout. */
  readonly deadline: number;
}

/** The error a handler passes to its callback: grpc-js's `ServiceError` shape, partly. */
export interface UnaryError {
  code?: number;
  details?: string;
  message?: string;
}

type UnaryHandler = (
  call: UnaryCall<unknown>,
  callback: (error: UnaryError | null, response?: unknown) => void,
) => void;

/** A server-streaming handler (health Watch): grpc-js's ServerWritableStream, the part it uses. */
export interface ServerStreamCall<Req, Res> extends UnaryCall<Req> {
  write(response: Res): boolean;
  end(): void;
  on(event: 'cancelled' | 'close' | 'error', listener: () => void): this;
}

type ServerStreamHandler = (call: ServerStreamCall<unknown, unknown>) => void;

type Method = {
  decode: (bytes: Buffer) => unknown;
  /** The response as one length-prefixed gRPC message. */
  frame: (response: unknown) => Buffer;
} & ({ kind: 'unary'; handler: UnaryHandler } | { kind: 'serverStream'; handler: ServerStreamHandler });

export interface UnaryGrpcServerOptions {
  host: string;
  port: number;
  /** Largest request message accepted, in bytes (default 4 MiB, as grpc-js). */
  maxReceiveMessageLength?: number;
  /** Streams in flight per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams?: number;
  /** A connection whose frame or header block stays incomplete this long is closed (default 30 s). */
  stallTimeoutMs?: number;
}

export interface UnaryGrpcServer {
  port: number;
  /** Adds a service's unary and server-streaming methods; one that streams requests answers UNIMPLEMENTED. */
  /**
   * `encoders`: per method name, the response type's ts-proto `encode`; its responses are then
   * written with one reused writer (see framesWithReusedWriter) instead of the definition's
   * serializer.
   */
  addService(
    service: ServiceDefinition,
    implementation: UntypedServiceImplementation,
    encoders?: Readonly<Record<string, EncodeInto>>,
  ): void;
  /** GOAWAY to every connection, in-flight calls finish for graceMs, then connections are destroyed. */
  close(graceMs: number): Promise<void>;
}

const frameHeaderBytes = 5;
const defaultMaxReceive = 4 * 1024 * 1024;

/** grpc-message is percent-encoded: bytes outside printable ASCII, and '%' itself. */
export function encodeGrpcMessage(message: string): string {
  let simple = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      simple = false;
      break;
    }
  }
  if (simple) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const timeoutUnitsMs: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/** `grpc-timeout`: at most 8 digits and a unit (H M S m u n); undefined when malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * (timeoutUnitsMs[match[2] as string] as number);
}

const emptyBody = Buffer.alloc(0);
const decompressors: Record<string, typeof gunzip> = { gzip: gunzip, deflate: inflate };

// The header blocks every answer uses, encoded once (literals without indexing: see h2/hpack.ts).
const responseHead = encodeHeaderBlock([
  [':status', '200'],
  ['content-type', 'application/grpc'],
]);
const okTrailers = encodeHeaderBlock([['grpc-status', '0']]);
const notGrpc = encodeHeaderBlock([[':status', '415']]);

function statusBlock(code: number, message: string, trailersOnly: boolean): Buffer {
  const fields: Array<[string, string]> = trailersOnly
    ? [
        [':status', '200'],
        ['content-type', 'application/grpc'],
      ]
    : [];
  fields.push(['grpc-status', String(code)], ['grpc-message', encodeGrpcMessage(message)]);
  if (trailersOnly && code === grpcStatus.UNIMPLEMENTED) fields.push(['grpc-accept-encoding', 'identity,gzip,deflate']);
  return encodeHeaderBlock(fields);
}

// One call's state, kept on its stream (stream.user); the connection calls the server's one
// StreamHandler, so a call allocates no closures of its own but the handler's callback (this
// is the hot path).
class Call implements UnaryCall<unknown> {
  request: unknown = undefined;
  cancelled = false;
  deadline = Number.POSITIVE_INFINITY;
  finished = false;
  timer: NodeJS.Timeout | undefined = undefined;
  // The body so far. Most come in one DATA frame: kept as where it lies in the read buffer
  // (firstBuf[firstStart, firstEnd)), so the message's view is the only Buffer made for it;
  // a body in several frames is gathered as views in `more`.
  firstBuf: Buffer | undefined = undefined;
  firstStart = 0;
  firstEnd = 0;
  more: Buffer[] | undefined = undefined;
  received = 0;
  /** Of `received`, what is counted in the connection's heldBytes until the body is consumed. */
  held = 0;
  declared = -1;
  encoding = 'identity';
  /** The trailers a stream that has sent its headers ends with (a server stream cut short). */
  trailers: Buffer = okTrailers;
  /** Set for a server-streaming call: its 'cancelled'/'close' events. */
  events: EventEmitter | undefined = undefined;

  constructor(
    readonly stream: H2Stream,
    readonly method: Method,
    readonly maxReceive: number,
  ) {}

  done() {
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.release();
  }

  release() {
    if (this.held === 0) return;
    this.stream.connection.heldBytes -= this.held;
    this.held = 0;
  }

  fail(code: number, message: string) {
    if (this.finished) return;
    this.done();
    this.cancelled = true;
    failStream(this.stream, code, message, this);
  }

  answer(frame: Buffer) {
    if (this.finished) return;
    this.done();
    const stream = this.stream;
    if (stream.closed) return;
    const connection = stream.connection;
    connection.respond(stream, responseHead, false);
    connection.sendData(stream, frame);
    connection.sendTrailers(stream, okTrailers);
  }

  /** The whole body arrived: check the frame, inflate if asked, decode, run the handler. */
  complete() {
    let body: Buffer = emptyBody;
    let start = 0;
    let end = 0;
    if (this.more) {
      body = Buffer.concat(this.more);
      end = body.length;
    } else if (this.firstBuf) {
      body = this.firstBuf;
      start = this.firstStart;
      end = this.firstEnd;
    }
    this.firstBuf = undefined;
    this.more = undefined;
    this.release();
    const length = end - start;
    if (length < frameHeaderBytes || length !== frameHeaderBytes + this.declared) {
      this.fail(
        grpcStatus.INTERNAL,
        length === 0
          ? 'the request carries no message'
          : `truncated request: ${length} bytes where the frame needs ${frameHeaderBytes + Math.max(this.declared, 0)}`,
      );
      return;
    }
    const flag = body[start];
    const message = body.subarray(start + frameHeaderBytes, end);
    if (flag === 0) {
      this.run(message);
      return;
    }
    if (flag !== 1) {
      this.fail(grpcStatus.INTERNAL, `invalid compressed flag ${flag} in the message prefix`);
      return;
    }
    const encoding = this.encoding;
    const decompress = decompressors[encoding];
    if (decompress === undefined) {
      this.fail(
        encoding === 'identity' ? grpcStatus.INTERNAL : grpcStatus.UNIMPLEMENTED,
        encoding === 'identity'
          ? 'compressed flag set but grpc-encoding is identity'
          : `grpc-encoding "${encoding.slice(0, 40)}" is not supported (identity, gzip, deflate are)`,
      );
      return;
    }
    decompress(message, { maxOutputLength: this.maxReceive }, (error, plain) => {
      if (this.finished) return;
      if (error) {
        const tooBig = (error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE';
        this.fail(
          tooBig ? grpcStatus.RESOURCE_EXHAUSTED : grpcStatus.INTERNAL,
          tooBig
            ? `decompressed request message is larger than the limit of ${this.maxReceive} bytes`
            : `request message could not be decompressed (${encoding})`,
        );
        return;
      }
      this.run(plain);
    });
  }

  run(bytes: Buffer) {
    const m = this.method;
    try {
      this.request = m.decode(bytes);
    } catch (error) {
      this.fail(grpcStatus.INTERNAL, `request message could not be decoded: ${errorText(error)}`);
      return;
    }
    if (m.kind === 'serverStream') {
      this.runStream(m.handler);
      return;
    }
    try {
      m.handler(this, (error, response) => this.respond(error, response));
    } catch {
      // The handler threw before answering: a bug, reported without its details.
      this.fail(grpcStatus.UNKNOWN, 'the method handler failed');
    }
  }

  respond(error: UnaryError | null, response: unknown) {
    if (this.finished) return;
    if (error) {
      this.fail(error.code ?? grpcStatus.UNKNOWN, error.details ?? error.message ?? 'call failed');
      return;
    }
    let frame: Buffer;
    try {
      frame = this.method.frame(response);
    } catch (encodeError) {
      this.fail(grpcStatus.INTERNAL, `response could not be encoded: ${errorText(encodeError)}`);
      return;
    }
    this.answer(frame);
  }

  runStream(handler: ServerStreamHandler) {
    let started = false;
    const call = this;
    const stream = this.stream;
    const connection = stream.connection;
    const frame = this.method.frame;
    const events = new EventEmitter();
    this.events = events;
    const streaming = Object.assign(events, {
      request: this.request,
      get cancelled() {
        return call.cancelled;
      },
      deadline: this.deadline,
      write(response: unknown) {
        if (call.finished || stream.closed) return false;
        if (!started) {
          started = true;
          connection.respond(stream, responseHead, false);
        }
        return connection.sendData(stream, frame(response));
      },
      end() {
        if (call.finished) return;
        if (!started) {
          call.fail(grpcStatus.OK, '');
          return;
        }
        call.done();
        connection.sendTrailers(stream, call.trailers);
      },
    });
    try {
      handler(streaming as unknown as ServerStreamCall<unknown, unknown>);
    } catch {
      this.fail(grpcStatus.UNKNOWN, 'the method handler failed');
    }
  }
}

/** Ends a stream with an error status: trailers-only, or trailers when headers went already. */
function failStream(stream: H2Stream, code: number, message: string, call?: Call) {
  if (stream.closed) return;
  const connection = stream.connection;
  if (stream.headersSent) {
    const trailers = statusBlock(code, message, false);
    if (call) call.trailers = trailers;
    connection.sendTrailers(stream, trailers);
    return;
  }
  // Trailers-only: the status goes in the one HEADERS frame that ends the stream.
  connection.respond(stream, statusBlock(code, message, true), true);
  // The client may still be sending (an oversized body); it gets no more reading.
  if (!stream.remoteEnded) connection.reset(stream, ErrorCode.NO_ERROR);
}

// The body of a unary call: one length-prefixed message. Its length is checked as soon as the
// prefix arrives, so an oversized message is refused without being buffered.
function onCallData(call: Call, buf: Buffer, start: number, end: number) {
  const length = end - start;
  if (length === 0) return;
  const connection = call.stream.connection;
  // Each call is bounded by maxReceive; the connection's calls together by maxHeld, so 1,000
  // streams each half way through a large message cannot hold gigabytes.
  if (connection.heldBytes + length > maxHeld(call.maxReceive)) {
    call.fail(grpcStatus.RESOURCE_EXHAUSTED, 'the connection holds too many request bytes; retry');
    return;
  }
  connection.heldBytes += length;
  call.held += length;
  if (call.firstBuf === undefined && call.more === undefined) {
    call.firstBuf = buf;
    call.firstStart = start;
    call.firstEnd = end;
  } else {
    if (call.more === undefined) {
      call.more = [(call.firstBuf as Buffer).subarray(call.firstStart, call.firstEnd)];
      call.firstBuf = undefined;
    }
    call.more.push(buf.subarray(start, end));
  }
  call.received += length;
  if (call.declared < 0 && call.received >= frameHeaderBytes) {
    if (call.more === undefined) {
      call.declared = buf.readUInt32BE(start + 1);
    } else {
      call.declared = Buffer.concat(call.more).readUInt32BE(1);
    }
    if (call.declared > call.maxReceive) {
      call.fail(
        grpcStatus.RESOURCE_EXHAUSTED,
        `request message of ${call.declared} bytes is larger than the limit of ${call.maxReceive} bytes`,
      );
      return;
    }
  }
  if (call.declared >= 0 && call.received > frameHeaderBytes + call.declared) {
    call.fail(grpcStatus.INTERNAL, 'a unary call carries one request message; more bytes followed it');
  }
}

/** Request bytes one connection's calls may hold at once: 16 MiB, or 4 of the largest message. */
function maxHeld(maxReceive: number): number {
  return Math.max(16 << 20, 4 * maxReceive);
}

function onDeadline(call: Call) {
  call.fail(grpcStatus.DEADLINE_EXCEEDED, 'deadline exceeded');
}

/** What the server does with each request stream its connections accept. */
function callHandler(methods: Map<string, Method | string>, maxReceive: number): StreamHandler {
  return {
    onRequest(stream: H2Stream, headers: HeaderList, endStream: boolean) {
      let verb: string | undefined;
      let path = '';
      let contentType: string | undefined;
      let timeout: string | undefined;
      let encoding: string | undefined;
      const { names, values } = headers;
      for (let i = 0; i < headers.count; i++) {
        const name = names[i];
        if (name === ':method') verb = values[i];
        else if (name === ':path') path = values[i] as string;
        else if (name === 'content-type') contentType = values[i];
        else if (name === 'grpc-timeout') timeout = values[i];
        else if (name === 'grpc-encoding') encoding = values[i];
      }
      if (verb !== 'POST') {
        failStream(stream, grpcStatus.UNIMPLEMENTED, `gRPC calls are POST, not ${String(verb)}`);
        return;
      }
      if (contentType === undefined || !contentType.startsWith('application/grpc')) {
        stream.connection.respond(stream, notGrpc, true);
        if (!stream.remoteEnded) stream.connection.reset(stream, ErrorCode.NO_ERROR);
        return;
      }
      const method = methods.get(path);
      if (method === undefined || typeof method === 'string') {
        failStream(stream, grpcStatus.UNIMPLEMENTED, method ?? `unknown method ${path.slice(0, 200)}`);
        return;
      }
      const call = new Call(stream, method, maxReceive);
      if (timeout !== undefined) {
        const ms = parseGrpcTimeout(timeout);
        if (ms === undefined) {
          failStream(stream, grpcStatus.INTERNAL, `malformed grpc-timeout "${timeout.slice(0, 40)}"`);
          return;
        }
        call.deadline = Date.now() + ms;
        call.timer = setTimeout(onDeadline, ms, call);
      }
      if (encoding !== undefined) call.encoding = encoding;
      stream.user = call;
      if (endStream) call.complete();
    },
    onData(stream: H2Stream, buf: Buffer, start: number, end: number, endStream: boolean) {
      const call = stream.user as Call | undefined;
      if (call === undefined || call.finished) return;
      onCallData(call, buf, start, end);
      if (endStream && !call.finished) call.complete();
    },
    // Both sides ended, the client cancelled (RST_STREAM) or the connection went: nothing is
    // written after it.
    onClose(stream: H2Stream) {
      const call = stream.user as Call | undefined;
      if (call === undefined) return;
      if (!call.finished) {
        call.done();
        call.cancelled = true;
      }
      if (call.events) {
        if (call.cancelled) call.events.emit('cancelled');
        call.events.emit('close');
      }
    },
  };
}

export async function startUnaryGrpcServer(opts: UnaryGrpcServerOptions): Promise<UnaryGrpcServer> {
  const maxReceive = opts.maxReceiveMessageLength ?? defaultMaxReceive;
  const methods = new Map<string, Method | string>();
  const connections = new Set<Connection>();
  const handler = callHandler(methods, maxReceive);
  const connectionOptions = {
    ...defaultConnectionOptions,
    maxConcurrentStreams: opts.maxConcurrentStreams ?? defaultConnectionOptions.maxConcurrentStreams,
  };
  const stallTimeoutMs = opts.stallTimeoutMs ?? 30_000;
  let closing = false;

  const server = createServer((socket: Socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    const connection = new Connection(socket, handler, connectionOptions);
    connections.add(connection);
    socket.on('close', () => connections.delete(connection));
  });
  // A connection stuck mid-frame (a slowloris) is closed; one sweep serves every connection.
  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const connection of connections) {
        if (connection.stalledSince !== 0 && now - connection.stalledSince > stallTimeoutMs) {
          connection.fail(ErrorCode.PROTOCOL_ERROR, 'incomplete frame for too long');
        }
      }
    },
    Math.min(1_000, stallTimeoutMs),
  );
  sweep.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  return {
    port: (server.address() as AddressInfo).port,
    addService(service, implementation, encoders) {
      for (const [name, definition] of Object.entries(service)) {
        const handler = implementation[name] ?? implementation[definition.originalName ?? ''];
        if (definition.requestStream) {
          methods.set(definition.path, `${definition.path} streams requests, which this server does not serve`);
          continue;
        }
        if (typeof handler !== 'function') continue;
        const encodeInto = encoders?.[name];
        const serialize = definition.responseSerialize;
        const codec = {
          decode: definition.requestDeserialize,
          frame: encodeInto ? framesWithReusedWriter(encodeInto) : (response: unknown) => frameOf(serialize(response)),
        };
        methods.set(
          definition.path,
          definition.responseStream
            ? { ...codec, kind: 'serverStream', handler: handler as unknown as ServerStreamHandler }
            : { ...codec, kind: 'unary', handler: handler as unknown as UnaryHandler },
        );
      }
    },
    close: (graceMs) =>
      new Promise<void>((resolve) => {
        closing = true;
        clearInterval(sweep);
        // server.close() stops accepting connections and calls back once every socket is gone;
        // goaway() refuses new streams and ends the connection when its streams have finished.
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        for (const connection of connections) connection.goaway();
        const timer = setTimeout(() => {
          for (const connection of connections) connection.destroy();
        }, graceMs);
        timer.unref();
      }),
  };
}

/**
 * ts-proto's `Message.encode(message, writer?)`: writes the message into the writer it is given
 * (a new one without) and returns that writer.
 */
// biome-ignore lint/suspicious/noExplicitAny: the generated encode of any message type
export type EncodeInto = (message: any, writer?: any) => ReusableWriter;
interface ReusableWriter {
  raw(chunk: Uint8Array): unknown;
  finish(): Uint8Array;
}

const emptyPrefix = new Uint8Array(frameHeaderBytes);

/**
 * Frames a method's responses with one writer, reused (its buffer stays as large as the largest
 * response): one copy per answer (finish) instead of a new writer growing from 128 bytes, a
 * Buffer copy of its output and a copy into the frame. Calls are encoded one at a time (encode
 * is synchronous); a throw leaves the writer mid-message, so it is dropped.
 */
function framesWithReusedWriter(encodeInto: EncodeInto): (response: unknown) => Buffer {
  let writer: ReusableWriter | undefined;
  return (response) => {
    if (!writer) {
      // The first answer makes the writer (ts-proto's encode needs a whole message to start from).
      const first = encodeInto(response);
      const frame = frameOf(Buffer.from(first.finish()));
      writer = first;
      return frame;
    }
    let bytes: Uint8Array;
    try {
      writer.raw(emptyPrefix);
      encodeInto(response, writer);
      bytes = writer.finish();
    } catch (error) {
      writer = undefined;
      throw error;
    }
    const frame = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.byteLength - frameHeaderBytes, 1);
    return frame;
  };
}

function frameOf(message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(frameHeaderBytes + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, frameHeaderBytes);
  return frame;
}

function errorText(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).slice(0, 200);
}
