// HPACK's Huffman code (RFC 7541 §5.2, Appendix B), decoding only: the server's own header
// blocks are written as plain literals. Decoding walks a binary tree flattened into one array
// (two children per node), a bit at a time; values the peer sends Huffman-coded are few once
// its dynamic table is warm, so simplicity wins over a state-table decoder here.

import { huffmanCodes, huffmanLengths } from './hpack-tables';

/** Child of node n for bit b is tree[2n + b]: > 0 another node, < 0 a symbol (-(sym + 1)), 0 none. */
const tree = buildTree();

function buildTree(): Int32Array {
  const nodes = new Int32Array(2 * 512);
  let next = 1;
  for (let sym = 0; sym <= 256; sym++) {
    const code = huffmanCodes[sym] as number;
    const length = huffmanLengths[sym] as number;
    let node = 0;
    for (let bit = length - 1; bit >= 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (bit === 0) {
        nodes[slot] = -(sym + 1);
      } else {
        if (nodes[slot] === 0) nodes[slot] = next++;
        node = nodes[slot] as number;
      }
    }
  }
  return nodes;
}

export class HuffmanError extends Error {}

const eos = 256;
let scratch = Buffer.allocUnsafe(256);

/**
 * Decodes `length` Huffman-coded bytes at `offset` into a latin1 string (one char per octet).
 * Refuses the EOS symbol, padding longer than 7 bits, and padding that is not EOS's prefix (ones).
 */
export function huffmanDecode(src: Uint8Array, offset: number, length: number): string {
  // At most 8/5 output octets per input octet (the shortest code is 5 bits).
  const bound = Math.ceil((length * 8) / 5);
  if (scratch.length < bound) scratch = Buffer.allocUnsafe(Math.max(bound, scratch.length * 2));
  const out = scratch;
  let n = 0;
  let node = 0;
  // Bits taken since the last whole symbol, and whether all of them were ones (valid padding).
  let pending = 0;
  let allOnes = true;
  const end = offset + length;
  for (let i = offset; i < end; i++) {
    const byte = src[i] as number;
    for (let bit = 7; bit >= 0; bit--) {
      const b = (byte >>> bit) & 1;
      const child = tree[2 * node + b] as number;
      pending++;
      if (b === 0) allOnes = false;
      if (child < 0) {
        const sym = -child - 1;
        if (sym === eos) throw new HuffmanError('Huffman-coded string contains EOS');
        out[n++] = sym;
        node = 0;
        pending = 0;
        allOnes = true;
      } else if (child === 0) {
        throw new HuffmanError('invalid Huffman code');
      } else {
        node = child;
      }
    }
  }
  if (pending > 7) throw new HuffmanError('Huffman padding longer than 7 bits');
  if (!allOnes) throw new HuffmanError('Huffman padding is not the EOS prefix');
  return out.toString('latin1', 0, n);
}

/** Huffman-encodes a latin1 string (tests, and a peer's view of what we decode). */
export function huffmanEncode(text: string): Buffer {
  let bits = 0;
  for (let i = 0; i < text.length; i++) bits += huffmanLengths[text.charCodeAt(i) & 0xff] as number;
  const out = Buffer.alloc(Math.ceil(bits / 8));
  let acc = 0;
  let accBits = 0;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const sym = text.charCodeAt(i) & 0xff;
    const len = huffmanLengths[sym] as number;
    const code = huffmanCodes[sym] as number;
    for (let bit = len - 1; bit >= 0; bit--) {
      acc = (acc << 1) | ((code >>> bit) & 1);
      if (++accBits === 8) {
        out[n++] = acc;
        acc = 0;
        accBits = 0;
      }
    }
  }
  if (accBits > 0) out[n] = (acc << (8 - accBits)) | (0xff >>> accBits);
  return out;
}
