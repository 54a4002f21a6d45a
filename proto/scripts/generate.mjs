#!/usr/bin/env node
// Generates TypeScript (ts-proto, grpc-js services) for Envoy's API and Sekisho's
// own protos through buf. Output goes to proto/gen (git-ignored) and is reused
// while a hash of every input is unchanged, so `npm test` and `npm start` can
// run it unconditionally.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const protoDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const xdsDeps = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const stage = join(protoDir, '.cache', 'src');
const out = join(protoDir, 'gen');
const stamp = join(out, '.inputs-hash');

// The Envoy API files Sekisho uses; their imports are generated with them.
const envoyEntryPoints = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/auth/v3/external_auth.proto',
  'envoy/service/ratelimit/v3/rls.proto',
  'envoy/service/accesslog/v3/als.proto',
  'envoy/service/secret/v3/sds.proto',
  'envoy/service/listener/v3/lds.proto',
  'envoy/service/route/v3/rds.proto',
  'envoy/service/cluster/v3/cds.proto',
  'envoy/service/endpoint/v3/eds.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/header_mutation/v3/header_mutation.proto',
  'envoy/extensions/filters/http/buffer/v3/buffer.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/filters/http/csrf/v3/csrf.proto',
  'envoy/extensions/filters/http/compressor/v3/compressor.proto',
  'envoy/extensions/compression/gzip/compressor/v3/gzip.proto',
  'envoy/extensions/compression/brotli/compressor/v3/brotli.proto',
  'envoy/extensions/common/matching/v3/extension_matcher.proto',
  'envoy/extensions/filters/common/matcher/action/v3/skip_action.proto',
  'envoy/type/matcher/v3/http_inputs.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/access_loggers/filters/cel/v3/cel.proto',
  'envoy/extensions/access_loggers/file/v3/file.proto',
  'envoy/extensions/access_loggers/stream/v3/stream.proto',
  'envoy/extensions/access_loggers/grpc/v3/als.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/path/match/uri_template/v3/uri_template_match.proto',
  'envoy/extensions/path/rewrite/uri_template/v3/uri_template_rewrite.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
];

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

function inputsHash() {
  const hash = createHash('sha256');
  const pkg = (name) => JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')).version;
  hash.update(`grpc-js-xds@${pkg('@grpc/grpc-js-xds')} ts-proto@${pkg('ts-proto')} buf@${pkg('@bufbuild/buf')}\n`);
  hash.update(readFileSync(fileURLToPath(import.meta.url)));
  hash.update(readFileSync(join(protoDir, 'buf.gen.yaml')));
  for (const file of [...walk(join(protoDir, 'sekisho')), ...walk(join(protoDir, 'grpc'))].sort()) {
    hash.update(relative(protoDir, file));
    hash.update(readFileSync(file));
  }
  return hash.digest('hex');
}

// protoc-gen-validate's validate.proto shipped in grpc-js-xds is older than its
// envoy-api: StringRules lacks `ignore_empty = 26`, which Envoy protos use.
function patchValidate(file) {
  const text = readFileSync(file, 'utf8');
  if (/ignore_empty\s*=\s*26/.test(text.slice(text.indexOf('message StringRules')))) return;
  const start = text.indexOf('message StringRules {');
  if (start < 0) throw new Error(`generate: no StringRules in ${file}`);
  // The message body contains nested braces (a oneof); find its closing brace.
  let depth = 0;
  let end = -1;
  for (let i = text.indexOf('{', start); i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new Error(`generate: unbalanced StringRules in ${file}`);
  const field =
    '\n    // Added by Sekisho: newer protoc-gen-validate field used by envoy-api.\n    optional bool ignore_empty = 26;\n';
  writeFileSync(file, text.slice(0, end) + field + text.slice(end));
}

// The route RateLimit message in grpc-js-xds's envoy-api predates Envoy's
// `bool apply_on_stream_done = 6;` (a rate-limit call made when the stream is done, which
// can read what ext_authz decided). Envoy 1.40 has it; only this one field is added.
function patchRouteRateLimit(file) {
  const text = readFileSync(file, 'utf8');
  if (/apply_on_stream_done\s*=\s*6/.test(text)) return;
  // The file has CRLF line ends; the field goes just before the message's closing brace.
  const anchor = /( {2}Override limit = 4;)(\r?\n)\}/;
  if (!anchor.test(text)) throw new Error(`generate: no RateLimit.limit field in ${file}`);
  const field =
    '$1$2$2  // Added by Sekisho: an Envoy 1.40 field, see generate.mjs.$2  bool apply_on_stream_done = 6;$2}';
  writeFileSync(file, text.replace(anchor, field));
}

// The same envoy-api's RateLimitDescriptor predates Envoy's per-descriptor
// `google.protobuf.UInt64Value hits_addend = 3;` (the number of hits this descriptor adds,
// overriding the request's). Envoy 1.40's own descriptor (read from its binary) has it at 3.
function patchRateLimitDescriptor(file) {
  const text = readFileSync(file, 'utf8');
  if (/hits_addend\s*=\s*3/.test(text)) return;
  const anchor = /( {2}RateLimitOverride limit = 2;)(\r?\n)\}/;
  const imports = /(import "envoy\/type\/v3\/token_bucket\.proto";)(\r?\n)/;
  if (!anchor.test(text) || !imports.test(text))
    throw new Error(`generate: no RateLimitDescriptor.limit field or imports in ${file}`);
  const field =
    '$1$2$2  // Added by Sekisho: an Envoy 1.40 field, see generate.mjs.$2  google.protobuf.UInt64Value hits_addend = 3;$2}';
  writeFileSync(file, text.replace(imports, '$1$2$2import "google/protobuf/wrappers.proto";$2').replace(anchor, field));
}

function stageSources() {
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  for (const dep of ['envoy-api', 'xds', 'googleapis'])
    cpSync(join(xdsDeps, dep), join(stage, dep), { recursive: true });
  cpSync(join(xdsDeps, 'protoc-gen-validate', 'validate'), join(stage, 'protoc-gen-validate', 'validate'), {
    recursive: true,
  });
  patchValidate(join(stage, 'protoc-gen-validate', 'validate', 'validate.proto'));
  patchRouteRateLimit(join(stage, 'envoy-api', 'envoy', 'config', 'route', 'v3', 'route_components.proto'));
  patchRateLimitDescriptor(
    join(stage, 'envoy-api', 'envoy', 'extensions', 'common', 'ratelimit', 'v3', 'ratelimit.proto'),
  );
  cpSync(join(protoDir, 'sekisho'), join(stage, 'sekisho', 'sekisho'), { recursive: true });
  // The gRPC health protocol, which Envoy's gRPC health checks call on the policy services.
  cpSync(join(protoDir, 'grpc'), join(stage, 'grpc-health', 'grpc'), { recursive: true });
  writeFileSync(
    join(stage, 'buf.yaml'),
    [
      'version: v2',
      'modules:',
      '  - path: envoy-api',
      '  - path: xds',
      '  - path: googleapis',
      '  - path: protoc-gen-validate',
      '  - path: sekisho',
      '  - path: grpc-health',
      'lint:',
      '  use: [MINIMAL]',
      '',
    ].join('\n'),
  );
}

const force = process.argv.includes('--force');
const hash = inputsHash();
if (!force && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) process.exit(0);

const started = Date.now();
stageSources();
rmSync(out, { recursive: true, force: true });
const bin = join(protoDir, '..', 'node_modules', '.bin');
const buf = join(bin, 'buf');
const paths = [
  ...envoyEntryPoints.map((p) => ['--path', join('envoy-api', p)]),
  ['--path', 'sekisho/sekisho'],
  ['--path', 'grpc-health/grpc'],
].flat();
execFileSync(
  buf,
  ['generate', '.', '--template', join(protoDir, 'buf.gen.yaml'), '--output', protoDir, '--include-imports', ...paths],
  { cwd: stage, stdio: 'inherit', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } },
);
writeFileSync(stamp, hash);
console.log(`generate: TypeScript for protos written to proto/gen in ${((Date.now() - started) / 1000).toFixed(1)}s`);
