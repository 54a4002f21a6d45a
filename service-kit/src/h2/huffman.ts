// HPACK's Huffman code (RFC 7541 §5.2, Appendix B), decoding only: the server's own header
// blocks are written as plain literals. Decoding takes four bits at a time through a table
// built once from the code: each of the tree's 256 inner nodes times each nibble gives the node
// reached, the symbol completed on the way (codes are 5 bits or more, so at most one), and
// whether input may end there. A value the peer never indexes (nghttp2 and Envoy never index
// `:path`) is decoded on every request, so this is on the hot path.

import { huffmanCodes, huffmanLengths } from './hpack-tables';

const eos = 256;

/** The code as a binary tree: child of node n for bit b is tree[2n + b] (> 0 a node, < 0 -(symbol + 1)). */
function buildTree(): { tree: Int32Array; nodes: number } {
  const tree = new Int32Array(2 * 512);
  let next = 1;
  for (let sym = 0; sym <= eos; sym++) {
    const code = huffmanCodes[sym] as number;
    const length = huffmanLengths[sym] as number;
    let node = 0;
    for (let bit = length - 1; bit >= 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (bit === 0) {
        tree[slot] = -(sym + 1);
      } else {
        if (tree[slot] === 0) tree[slot] = next++;
        node = tree[slot] as number;
      }
    }
  }
  return { tree, nodes: next };
}

// An entry: bits 0–8 the next node, 9–17 the symbol + 1 (0: none), bit 18 invalid (EOS in the
// string), bit 19 "may end here" (padding so far is at most 7 one-bits, RFC 7541 §5.2).
const symbolShift = 9;
const failBit = 1 << 18;
const acceptBit = 1 << 19;

const table = buildTable();

function buildTable(): Int32Array {
  const { tree, nodes } = buildTree();
  // The nodes reached from the root by ones only, up to 7 deep: where padding may stop.
  const acceptable = new Uint8Array(nodes);
  acceptable[0] = 1;
  let node = 0;
  for (let depth = 1; depth <= 7; depth++) {
    node = tree[2 * node + 1] as number;
    acceptable[node] = 1;
  }
  const out = new Int32Array(nodes * 16);
  for (let n = 0; n < nodes; n++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let cur = n;
      let symbol = -1;
      let fail = false;
      for (let bit = 3; bit >= 0; bit--) {
        const child = tree[2 * cur + ((nibble >>> bit) & 1)] as number;
        if (child < 0) {
          const sym = -child - 1;
          if (sym === eos) fail = true;
          symbol = sym;
          cur = 0;
        } else {
          cur = child;
        }
      }
      out[n * 16 + nibble] =
        cur | ((symbol + 1) << symbolShift) | (fail ? failBit : 0) | (acceptable[cur] ? acceptBit : 0);
    }
  }
  return out;
}

export class HuffmanError extends Error {}

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
  let state = 0;
  let entry = acceptBit;
  const end = offset + length;
  for (let i = offset; i < end; i++) {
    const byte = src[i] as number;
    entry = table[state * 16 + (byte >>> 4)] as number;
    if (entry & failBit) throw new HuffmanError('Huffman-coded string contains EOS');
    let sym = (entry >>> symbolShift) & 0x1ff;
    if (sym !== 0) out[n++] = sym - 1;
    state = entry & 0x1ff;
    entry = table[state * 16 + (byte & 0xf)] as number;
    if (entry & failBit) throw new HuffmanError('Huffman-coded string contains EOS');
    sym = (entry >>> symbolShift) & 0x1ff;
    if (sym !== 0) out[n++] = sym - 1;
    state = entry & 0x1ff;
  }
  if ((entry & acceptBit) === 0) throw new HuffmanError('Huffman padding is not at most 7 bits of the EOS prefix');
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
