// Compression in Envoy's compressor filter, one instance per algorithm (brotli, gzip). Envoy
// picks by the request's Accept-Encoding q-values, the first instance on a tie, and compresses
// only its default content types (JSON, text/html, text/plain, text/css, text/xml, JavaScript,
// SVG, XHTML) above the minimum length; it adds Vary: Accept-Encoding.

import { Brotli } from '@sekisho/proto/envoy/extensions/compression/brotli/compressor/v3/brotli';
import { Gzip } from '@sekisho/proto/envoy/extensions/compression/gzip/compressor/v3/gzip';
import { Compressor } from '@sekisho/proto/envoy/extensions/filters/http/compressor/v3/compressor';
import { HttpFilter } from '@sekisho/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager';
import type { CompressionIR } from '../ir/types';
import { pack } from './any';
import { httpFilterNames } from './filter-names';

export function compressionFilters(compression: CompressionIR): HttpFilter[] {
  return compression.algorithms.map((algorithm, index) =>
    HttpFilter.fromPartial({
      name: algorithm === 'br' ? httpFilterNames.compressorBrotli : httpFilterNames.compressorGzip,
      typedConfig: pack(
        Compressor,
        Compressor.fromPartial({
          responseDirectionConfig: { commonConfig: { minContentLength: compression.minLength } },
          compressorLibrary:
            algorithm === 'br'
              ? { name: 'envoy.compression.brotli.compressor', typedConfig: pack(Brotli, Brotli.fromPartial({})) }
              : { name: 'envoy.compression.gzip.compressor', typedConfig: pack(Gzip, Gzip.fromPartial({})) },
          chooseFirst: index === 0,
        }),
      ),
    }),
  );
}
