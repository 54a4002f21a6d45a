// envoy.service.accesslog.v3.AccessLogService: Envoy streams entries; the detector takes them
// without waiting on Redis, so the stream never pushes back on Envoy.
import type { ServerReadableStream, sendUnaryData, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { StreamAccessLogsMessage, StreamAccessLogsResponse } from '@sekisho/proto/envoy/service/accesslog/v3/als';
import type { Detector } from './detector';

export function createAccessLogServer(
  detector: Detector,
  onEntries: (count: number) => void,
): UntypedServiceImplementation {
  return {
    streamAccessLogs(
      call: ServerReadableStream<StreamAccessLogsMessage, StreamAccessLogsResponse>,
      callback: sendUnaryData<StreamAccessLogsResponse>,
    ) {
      call.on('data', (message: StreamAccessLogsMessage) => {
        const entries = message.httpLogs?.logEntry ?? [];
        onEntries(entries.length);
        for (const entry of entries) detector.ingest(entry);
      });
      call.on('end', () => callback(null, {}));
      // A stream Envoy resets has nothing to answer; what it sent was taken already.
      call.on('error', () => {});
    },
  };
}
