import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuildResult, buildServices, distEntry } from './build';

// The production build into a folder of its own: every bundle is ASCII and runs under plain
// node with no TypeScript loader (shown by each service refusing a bad variable by name,
// which needs its whole configuration code loaded).

let dir: string;
let result: BuildResult;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-build-'));
  result = await buildServices(dir);
}, 120_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function runPlainNode(file: string, env: Record<string, string>) {
  return new Promise<{ code: number; output: string }>((resolve) => {
    execFile(
      process.execPath,
      [file],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, output: stdout + stderr }),
    );
  });
}

describe('buildServices', () => {
  it('writes one ASCII-only bundle per service', () => {
    expect(result.files.map((f) => f.service).sort()).toEqual([
      'control-plane',
      'ext-authz',
      'injector',
      'ratelimit-service',
      'threat-detector',
    ]);
    for (const file of result.files) {
      expect(file.path).toBe(distEntry(file.service, dir));
      const bytes = readFileSync(file.path);
      expect(
        bytes.findIndex((b) => b > 0x7f),
        file.path,
      ).toBe(-1);
      expect(bytes.toString('latin1')).not.toContain("from 'tsx");
    }
  });

  it.each(['ratelimit-service', 'ext-authz'] as const)(
    "%s carries only the parts of zod it uses (English messages, none of zod's other locales)",
    (service) => {
      // `import { z } from 'zod'` keeps all of zod (~600 kB, ~64 locales, ~2 MB more RSS idle);
      // `import * as z from 'zod'` lets esbuild keep only what the schemas call.
      const text = readFileSync(distEntry(service, dir), 'latin1');
      const locales = new Set(text.match(/zod\/v4\/locales\/[a-zA-Z-]+\.js/g));
      expect([...locales].sort()).toEqual(['zod/v4/locales/en.js', 'zod/v4/locales/index.js']);
    },
  );

  it.each([
    ['ratelimit-service', 'RATELIMIT_GRPC_PORT'],
    ['ext-authz', 'EXT_AUTHZ_GRPC_PORT'],
    ['control-plane', 'CONTROL_PLANE_XDS_PORT'],
    ['injector', 'INJECTOR_PORT'],
    ['threat-detector', 'THREAT_GRPC_PORT'],
  ] as const)('%s runs under plain node and names a bad variable', async (service, variable) => {
    const { code, output } = await runPlainNode(distEntry(service, dir), { [variable]: 'not-a-port' });
    expect(code, output).not.toBe(0);
    expect(output).toContain(variable);
    expect(output).not.toMatch(/ERR_UNKNOWN_FILE_EXTENSION|Cannot find (module|package)/);
  });
});
