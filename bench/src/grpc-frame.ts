// gRPC's length-prefixed message framing (the part of the protocol that is not HTTP/2):
// one byte compressed flag, four bytes big-endian length, then the message.

export const frameHeaderBytes = 5;

/** One uncompressed gRPC message frame. */
export function frameMessage(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(frameHeaderBytes + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, frameHeaderBytes);
  return frame;
}

export interface GrpcFrame {
  compressed: boolean;
  message: Buffer;
}

/** Splits a complete request or response body into its frames; throws on a truncated body. */
export function parseFrames(body: Buffer): GrpcFrame[] {
  const frames: GrpcFrame[] = [];
  let offset = 0;
  while (offset < body.length) {
    if (body.length - offset < frameHeaderBytes) {
      throw new Error(`gRPC body: ${body.length - offset} bytes left, less than a frame header`);
    }
    const flag = body[offset];
    if (flag !== 0 && flag !== 1) throw new Error(`gRPC body: compressed flag ${flag} at byte ${offset}`);
    const length = body.readUInt32BE(offset + 1);
    const start = offset + frameHeaderBytes;
    if (start + length > body.length) {
      throw new Error(`gRPC body: a frame of ${length} bytes, only ${body.length - start} present`);
    }
    frames.push({ compressed: flag === 1, message: body.subarray(start, start + length) });
    offset = start + length;
  }
  return frames;
}
