import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { frameMessage } from './grpc-frame';

// A unary gRPC request as h2load sends it: POST of one framed message, with the headers a
// gRPC client sends (te: trailers is required by the protocol).

export const grpcHeaders = { 'content-type': 'application/grpc', te: 'trailers' } as const;

/** Writes the framed request to a temporary file for h2load's -d and returns its path. */
export async function grpcBodyFile(label: string, message: Uint8Array): Promise<string> {
  const file = join(tmpdir(), `sekisho-bench-${label}-${process.pid}.bin`);
  await writeFile(file, frameMessage(message));
  return file;
}

/** Runs `call` n times, `inFlight` at a time; rejects with the first failure. */
export async function callMany(n: number, inFlight: number, call: () => Promise<unknown>): Promise<void> {
  let started = 0;
  const worker = async () => {
    while (started < n) {
      started++;
      await call();
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, worker));
}
