import { describe, expect, it } from 'vitest';
import { frameMessage, parseFrames } from './grpc-frame';

describe('gRPC message framing', () => {
  it('prefixes a message with an uncompressed flag and its big-endian length', () => {
    const frame = frameMessage(Uint8Array.from([7, 8, 9]));
    expect([...frame]).toEqual([0, 0, 0, 0, 3, 7, 8, 9]);
  });

  it('frames an empty message as a bare header', () => {
    expect([...frameMessage(new Uint8Array())]).toEqual([0, 0, 0, 0, 0]);
  });

  it('reads back consecutive frames', () => {
    const body = Buffer.concat([frameMessage(Uint8Array.from([1])), frameMessage(Uint8Array.from([2, 3]))]);
    expect(parseFrames(body).map((f) => [...f.message])).toEqual([[1], [2, 3]]);
  });

  it.each([
    ['a truncated header', Buffer.from([0, 0, 0])],
    ['a truncated message', Buffer.from([0, 0, 0, 0, 4, 1, 2])],
    ['an unknown compressed flag', Buffer.from([2, 0, 0, 0, 0])],
  ])('refuses %s with an error', (_what, body) => {
    expect(() => parseFrames(body)).toThrow(/gRPC body/);
  });
});
