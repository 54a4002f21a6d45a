// Preloaded by bench:gc (node --require): v8.GCProfiler over a window the benchmark chooses.
// The first SIGUSR2 starts it, the second stops it and writes its JSON to SEKISHO_GC_PROBE_OUT.
'use strict';
const { writeFileSync } = require('node:fs');
const { GCProfiler } = require('node:v8');

const out = process.env.SEKISHO_GC_PROBE_OUT;
let profiler;
process.on('SIGUSR2', () => {
  if (!out) return;
  if (profiler === undefined) {
    profiler = new GCProfiler();
    profiler.start();
    return;
  }
  writeFileSync(out, JSON.stringify(profiler.stop()));
  profiler = undefined;
});
