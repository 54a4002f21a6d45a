// `npm run mint-token -- --uid alice --group premium_customer [--email a@example.com] [--expires 3600]`
// Prints a development ID token that the gateway started by `npm start` accepts:
// it is signed by the same persistent development key the local key server serves.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compileDefinitionFile } from '@sekisho/control-plane/definition/load';
import { loadOrCreateDevKey, mintIdToken } from '../firebase-keys';
import { devDefinitionFile } from '../paths';

const usage =
  'usage: npm run mint-token -- --uid <uid> [--group <group>] [--email <email>] [--expires <seconds>] [--definition <file>]';

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

let values: { uid?: string; group?: string; email?: string; expires: string; definition?: string };
try {
  ({ values } = parseArgs({
    options: {
      uid: { type: 'string' },
      group: { type: 'string' },
      email: { type: 'string' },
      expires: { type: 'string', default: '3600' },
      definition: { type: 'string' },
    },
  }));
} catch (error) {
  fail(`${error instanceof Error ? error.message : String(error)}\n${usage}`);
}

if (!values.uid) fail(usage);
const expiresIn = Number(values.expires);
if (!/^\d+$/.test(values.expires) || expiresIn <= 0)
  fail(`--expires must be a whole number of seconds, got "${values.expires}"`);

const definitionFile = values.definition ? resolve(values.definition) : devDefinitionFile();
const compiled = await compileDefinitionFile(definitionFile);
if (!compiled.ok) {
  console.error(`${definitionFile} is invalid:`);
  console.error(compiled.errors.map((e) => `  ${e.path || '(file)'}: ${e.message}`).join('\n'));
  process.exit(1);
}
const { identity } = compiled.definition;
if (values.group && !(values.group in identity.groups)) {
  fail(`unknown group "${values.group}"; the definition has: ${Object.keys(identity.groups).join(', ')}`);
}
const token = await mintIdToken(await loadOrCreateDevKey(), {
  projectId: identity.firebase.projectId,
  uid: values.uid,
  expiresIn,
  ...(values.email ? { email: values.email, emailVerified: true } : {}),
  claims: values.group ? { [identity.groupClaim]: values.group } : {},
});
console.log(token);
