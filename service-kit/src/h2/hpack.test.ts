// HPACK against RFC 7541's own examples (Appendix C: request and response sequences, with and
// without Huffman, sharing one dynamic table per sequence) and against malformed blocks.
import { describe, expect, it } from 'vitest';
import { encodeHeaderBlock, encodeTableSizeUpdate, HeaderList, HpackDecoder, HpackError } from './hpack';
import { huffmanDecode, huffmanEncode } from './huffman';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function decodeAll(decoder: HpackDecoder, block: Buffer, limit = 1 << 20): Array<[string, string]> {
  const list = new HeaderList();
  decoder.decode(block, list, limit);
  return list.names.slice(0, list.count).map((name, i) => [name, list.values[i] as string]);
}

const requests: Array<[string, Array<[string, string]>, number]> = [
  [
    '',
    [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/'],
      [':authority', 'www.example.com'],
    ],
    57,
  ],
  [
    '',
    [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/'],
      [':authority', 'www.example.com'],
      ['cache-control', 'no-cache'],
    ],
    110,
  ],
  [
    '',
    [
      [':method', 'GET'],
      [':scheme', 'https'],
      [':path', '/index.html'],
      [':authority', 'www.example.com'],
      ['custom-key', 'custom-value'],
    ],
    164,
  ],
];
const date1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const responses: Array<[Array<[string, string]>, number, number]> = [
  [
    [
      [':status', '302'],
      ['cache-control', 'private'],
      ['date', date1],
      ['location', 'https://www.example.com'],
    ],
    222,
    4,
  ],
  [
    [
      [':status', '307'],
      ['cache-control', 'private'],
      ['date', date1],
      ['location', 'https://www.example.com'],
    ],
    222,
    4,
  ],
  [
    [
      [':status', '200'],
      ['cache-control', 'private'],
      ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'],
      ['location', 'https://www.example.com'],
      ['content-encoding', 'gzip'],
      ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'],
    ],
    215,
    3,
  ],
];

const sequences = {
  'C.3 requests without Huffman': [
    '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
    '8286 84be 5808 6e6f 2d63 6163 6865',
    '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
  ],
  'C.4 requests with Huffman': [
    '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
    '8286 84be 5886 a8eb 1064 9cbf',
    '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
  ],
  'C.5 responses without Huffman (table of 256)': [
    `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a
     3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
    '4803 3330 37c1 c0bf',
    `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04
     677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49
     553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`,
  ],
  'C.6 responses with Huffman (table of 256)': [
    `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e
     919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
    '4883 640e ffc1 c0bf',
    `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7
     821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed
     4ee5 b106 3d50 07`,
  ],
};

describe('HPACK decoding of RFC 7541 Appendix C', () => {
  it.each(['C.3 requests without Huffman', 'C.4 requests with Huffman'] as const)('%s', (name) => {
    const decoder = new HpackDecoder(4096);
    sequences[name].forEach((block, i) => {
      const [, fields, size] = requests[i] as (typeof requests)[number];
      expect(decodeAll(decoder, hex(block))).toEqual(fields);
      expect(decoder.size).toBe(size);
    });
  });

  it.each(['C.5 responses without Huffman (table of 256)', 'C.6 responses with Huffman (table of 256)'] as const)(
    '%s, evicting the oldest entries',
    (name) => {
      const decoder = new HpackDecoder(256);
      sequences[name].forEach((block, i) => {
        const [fields, size, entries] = responses[i] as (typeof responses)[number];
        expect(decodeAll(decoder, hex(block))).toEqual(fields);
        expect(decoder.size).toBe(size);
        expect(decoder.tableLength).toBe(entries);
      });
    },
  );
});

describe('HPACK dynamic table', () => {
  const literal = (name: string, value: string) =>
    Buffer.concat([
      Buffer.from([0x40, name.length]),
      Buffer.from(name),
      Buffer.from([value.length]),
      Buffer.from(value),
    ]);

  it('evicts the oldest entries to make room, and index 62 is the newest', () => {
    const decoder = new HpackDecoder(100); // room for two entries of 34 + 32 bytes, not three
    decodeAll(decoder, Buffer.concat([literal('a', 'x'.repeat(33)), literal('b', 'y'.repeat(33))]));
    expect(decoder.tableLength).toBe(1);
    expect(decodeAll(decoder, literal('c', 'z'))).toEqual([['c', 'z']]);
    expect(decoder.tableLength).toBe(2);
    expect(decodeAll(decoder, hex('be bf'))).toEqual([
      ['c', 'z'],
      ['b', 'y'.repeat(33)],
    ]);
    expect(() => decodeAll(decoder, hex('c0'))).toThrow(HpackError);
  });

  it('empties the table for an entry larger than it, without adding it', () => {
    const decoder = new HpackDecoder(64);
    decodeAll(decoder, literal('a', 'b'));
    expect(decodeAll(decoder, literal('big', 'v'.repeat(40)))).toEqual([['big', 'v'.repeat(40)]]);
    expect(decoder.tableLength).toBe(0);
    expect(decoder.size).toBe(0);
  });

  it('applies a size update at the start of a block, evicting what no longer fits', () => {
    const decoder = new HpackDecoder(4096);
    decodeAll(decoder, Buffer.concat([literal('a', 'b'), literal('c', 'd')]));
    expect(decoder.size).toBe(68);
    decodeAll(decoder, Buffer.concat([encodeTableSizeUpdate(40), hex('82')]));
    expect(decoder.maxSize).toBe(40);
    expect(decoder.tableLength).toBe(1);
    expect(decodeAll(decoder, hex('be'))).toEqual([['c', 'd']]);
    decodeAll(decoder, encodeTableSizeUpdate(0));
    expect(decoder.tableLength).toBe(0);
    decodeAll(decoder, encodeTableSizeUpdate(4096));
    expect(decoder.maxSize).toBe(4096);
  });

  it('refuses a size update above the advertised limit, or after a field', () => {
    expect(() => decodeAll(new HpackDecoder(4096), encodeTableSizeUpdate(4097))).toThrow(/exceeds the limit/);
    expect(() => decodeAll(new HpackDecoder(4096), Buffer.concat([hex('82'), encodeTableSizeUpdate(0)]))).toThrow(
      /after a header field/,
    );
  });
});

describe('HPACK header list limit', () => {
  it('keeps decoding past the limit (the table stays in step) but keeps no more fields', () => {
    const decoder = new HpackDecoder(4096);
    const list = new HeaderList();
    const value = 'v'.repeat(100);
    const block = Buffer.concat([
      hex('82'),
      Buffer.from([0x40, 1, 0x61, 100]),
      Buffer.from(value),
      Buffer.from([0x40, 1, 0x62, 100]),
      Buffer.from(value),
    ]);
    decoder.decode(block, list, 200);
    expect(list.tooLarge).toBe(true);
    expect(list.count).toBe(2);
    expect(decoder.tableLength).toBe(2);
    decoder.decode(hex('be'), list, 200);
    expect([list.tooLarge, list.names[0], list.values[0]]).toEqual([false, 'b', value]);
  });
});

describe('HPACK malformed input', () => {
  it.each([
    ['index 0', '80'],
    ['an index past the tables', 'ff 00'],
    ['a truncated integer', '7f'],
    ['an integer past 2^28', 'ff ff ff ff ff 7f'],
    ['a truncated string', '40 05 61 62'],
    ['a string longer than the block', '00 01 61 7f 20'],
    ['a literal without its value', '00 01 61'],
    ['Huffman with the EOS symbol', '00 01 61 84 ff ff ff ff'],
    ['Huffman padding longer than 7 bits', '00 01 61 82 1f ff'],
    ['Huffman padding of zeros', '00 01 61 81 00'],
  ])('refuses %s', (_name, block) => {
    expect(() => decodeAll(new HpackDecoder(4096), hex(block))).toThrow(HpackError);
  });
});

describe('HPACK on random input', () => {
  it('either decodes or throws HpackError, nothing else, for 20,000 random blocks', () => {
    // A seeded generator (xorshift32), so a failure names a block that can be replayed.
    let seed = 0x2545f491;
    const next = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return seed >>> 0;
    };
    const decoder = new HpackDecoder(4096);
    const list = new HeaderList();
    for (let i = 0; i < 20_000; i++) {
      const block = Buffer.alloc(1 + (next() % 64));
      for (let j = 0; j < block.length; j++) block[j] = next() & 0xff;
      try {
        decoder.decode(block, list, 16_384);
      } catch (error) {
        if (!(error instanceof HpackError)) throw new Error(`block ${block.toString('hex')}: ${String(error)}`);
      }
      expect(decoder.size).toBeLessThanOrEqual(decoder.maxSize);
    }
  });
});

describe('Huffman code', () => {
  it('decodes what it encodes, every octet value included', () => {
    const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
    for (const text of ['', 'a', 'www.example.com', 'application/grpc', all]) {
      const coded = huffmanEncode(text);
      expect(huffmanDecode(coded, 0, coded.length)).toBe(text);
    }
  });

  it('matches RFC 7541 C.4.1', () => {
    expect(huffmanEncode('www.example.com')).toEqual(hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff'));
  });
});

describe('HPACK Huffman strings seen again', () => {
  it('decodes each of many same-length values right, the second time as the first', () => {
    const decoder = new HpackDecoder(4096);
    const block = (value: string) => {
      const coded = huffmanEncode(value);
      return Buffer.concat([Buffer.from([0x04, 0x80 | coded.length]), coded]); // :path, never indexed
    };
    const values = Array.from({ length: 40 }, (_, i) => `/svc.V${String(i).padStart(2, '0')}/Check`);
    for (const round of [1, 2]) {
      for (const value of values)
        expect([round, decodeAll(decoder, block(value))]).toEqual([round, [[':path', value]]]);
    }
  });
});

describe('HPACK encoding of answers', () => {
  it('writes :status 200 as its static index and other fields as literals without indexing', () => {
    const block = encodeHeaderBlock([
      [':status', '200'],
      ['content-type', 'application/grpc'],
      ['grpc-status', '0'],
    ]);
    expect(block[0]).toBe(0x88);
    const decoder = new HpackDecoder(4096);
    expect(decodeAll(decoder, block)).toEqual([
      [':status', '200'],
      ['content-type', 'application/grpc'],
      ['grpc-status', '0'],
    ]);
    expect(decoder.tableLength).toBe(0);
  });

  it('encodes a value longer than 127 octets with a multi-byte length', () => {
    const message = 'x'.repeat(1000);
    expect(decodeAll(new HpackDecoder(4096), encodeHeaderBlock([['grpc-message', message]]))).toEqual([
      ['grpc-message', message],
    ]);
  });
});
