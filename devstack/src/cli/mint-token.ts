// `npm run mint-token -- --uid alice --group premium_customer [--email a@example.com] [--expires 3600]`
// Prints a development ID token that the gateway started by `npm start` accepts:
// it is signed by the same persistent development key the local key server serves.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compileDefinitionFile } from '@sekisho/control-plane/definition/load';
import { loadOrCreateDevKey, mintIdToken } from '../firebase-keys';
import { repoRoot } from '../paths';

const { values } = parseArgs({
  options: {
    uid: { type: 'string' },
    group: { type: 'string' },
    email: { type: 'string' },
    expires: { type: 'string', default: '3600' },
    definition: {
      type: 'string',
      default: process.env.SEKISHO_DEFINITION ?? 'control-plane/examples/salon.gateway.ts',
    },
  },
});

if (!values.uid) {
  console.error('usage: npm run mint-token -- --uid <uid> [--group <group>] [--email <email>] [--expires <seconds>]');
  process.exit(2);
}
const compiled = await compileDefinitionFile(resolve(repoRoot, values.definition));
if (!compiled.ok) {
  console.error(compiled.errors.map((e) => `${e.path || '(file)'}: ${e.message}`).join('\n'));
  process.exit(1);
}
const { identity } = compiled.definition;
if (values.group && !(values.group in identity.groups)) {
  console.error(`unknown group "${values.group}"; the definition has: ${Object.keys(identity.groups).join(', ')}`);
  process.exit(2);
}
const token = await mintIdToken(await loadOrCreateDevKey(), {
  projectId: identity.firebase.projectId,
  uid: values.uid,
  expiresIn: Number(values.expires),
  ...(values.email ? { email: values.email, emailVerified: true } : {}),
  claims: values.group ? { [identity.groupClaim]: values.group } : {},
});
console.log(token);
