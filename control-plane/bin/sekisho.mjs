#!/usr/bin/env node
// The `sekisho` bin: the CLI is TypeScript, so tsx's loader is registered before it is imported.
import { register } from 'tsx/esm/api';

register();
const { processIo, runCli } = await import('../src/cli/main.ts');
process.exitCode = await runCli(process.argv.slice(2), processIo());
