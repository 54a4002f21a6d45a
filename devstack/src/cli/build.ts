// `npm run build`: bundles the services into dist/ (see ../build.ts); `npm start`, the
// benchmarks run those files with plain `node`, as production does.
import { relative } from 'node:path';
import { buildServices } from '../build';
import { repoRoot } from '../paths';

const result = await buildServices();
for (const file of result.files) {
  console.log(`build: ${relative(repoRoot, file.path)} (${(file.bytes / 1024 / 1024).toFixed(1)} MB)`);
}
console.log(`build: done in ${result.ms} ms`);
