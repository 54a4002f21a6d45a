// Invalid definitions are refused with the exact path of every offending field, and
// definition files of every supported kind load (or fail) without throwing.
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CompileResult, compileDefinition, compileDefinitionFile } from './load';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are mutated freely
type Def = any;

function validDefinition(): Def {
  return {
    listeners: { http: { port: 8080 } },
    identity: {
      firebase: { projectId: 'demo-salon' },
      groupClaim: 'tier',
      groups: {
        basic: ['read:own_profile'],
        verified: { inherits: 'basic', adds: ['update:own_profile'] },
      },
    },
    policyServices: {
      extAuthz: { address: '127.0.0.1:9001' },
      rateLimit: { address: '127.0.0.1:9002' },
    },
    services: { customer: { endpoints: ['127.0.0.1:3001'] } },
    limits: {
      authenticated: [{ per: 'user', limit: 300, window: '1m' }],
      unauthenticated: [{ per: 'ip', limit: 60, window: '1m' }],
    },
    routes: [
      { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      { match: '/api/v1/auth/*', to: 'customer', auth: 'none', limits: [{ per: 'ip', limit: 5, window: '1m' }] },
    ],
  };
}

function errorPaths(result: CompileResult): string[] {
  return result.ok ? [] : result.errors.map((error) => error.path).sort();
}

const invalid: Array<{ name: string; change: (def: Def) => void; paths: string[] }> = [
  { name: 'an unknown top-level key', change: (d) => (d.listner = {}), paths: ['listner'] },
  {
    name: 'a misspelt service field',
    change: (d) => (d.services.customer.timout = '5s'),
    paths: ['services.customer.timout'],
  },
  { name: 'a missing listener port', change: (d) => delete d.listeners.http.port, paths: ['listeners.http.port'] },
  {
    name: 'a listener address that is not an IP',
    change: (d) => (d.listeners.http.address = 'localhost'),
    paths: ['listeners.http.address'],
  },
  {
    name: 'a permission nobody grants (typo)',
    change: (d) => (d.routes[0].require = ['read:own_profle']),
    paths: ['routes[0].require[0]'],
  },
  {
    name: 'a malformed permission',
    change: (d) => (d.routes[0].require = ['read-profile']),
    paths: ['routes[0].require[0]'],
  },
  { name: 'a route to an unknown service', change: (d) => (d.routes[0].to = 'custmer'), paths: ['routes[0].to'] },
  {
    name: 'permissions on an auth: none route',
    change: (d) => (d.routes[1].require = ['read:own_profile']),
    paths: ['routes[1].require'],
  },
  {
    name: 'a per-user limit on an auth: none route',
    change: (d) => (d.routes[1].limits[0].per = 'user'),
    paths: ['routes[1].limits[0].per'],
  },
  {
    name: 'a per-ip authenticated limit',
    change: (d) => (d.limits.authenticated[0].per = 'ip'),
    paths: ['limits.authenticated[0].per'],
  },
  {
    name: 'a per-user unauthenticated limit',
    change: (d) => (d.limits.unauthenticated[0].per = 'user'),
    paths: ['limits.unauthenticated[0].per'],
  },
  {
    name: 'a window that is not whole seconds',
    change: (d) => (d.limits.authenticated[0].window = '1500ms'),
    paths: ['limits.authenticated[0].window'],
  },
  {
    name: 'a duration without unit',
    change: (d) => (d.policyServices.extAuthz.timeout = '500'),
    paths: ['policyServices.extAuthz.timeout'],
  },
  { name: 'a zero limit', change: (d) => (d.routes[1].limits[0].limit = 0), paths: ['routes[1].limits[0].limit'] },
  {
    name: 'a fractional limit',
    change: (d) => (d.limits.unauthenticated[0].limit = 1.5),
    paths: ['limits.unauthenticated[0].limit'],
  },
  {
    name: 'two windows of the same length in one family',
    change: (d) => d.limits.authenticated.push({ per: 'user', limit: 10, window: '60s' }),
    paths: ['limits.authenticated[1].window'],
  },
  {
    name: 'an endpoint without port',
    change: (d) => (d.services.customer.endpoints = ['127.0.0.1']),
    paths: ['services.customer.endpoints[0]'],
  },
  {
    name: 'an endpoint with a bad IP',
    change: (d) => (d.services.customer.endpoints = ['127.0.0.300:80']),
    paths: ['services.customer.endpoints[0]'],
  },
  {
    name: 'a service without endpoints',
    change: (d) => (d.services.customer.endpoints = []),
    paths: ['services.customer.endpoints'],
  },
  {
    name: 'an unknown failure mode',
    change: (d) => (d.policyServices.rateLimit.failureMode = 'open'),
    paths: ['policyServices.rateLimit.failureMode'],
  },
  { name: 'a malformed match', change: (d) => (d.routes[0].match = 'FETCH /x'), paths: ['routes[0].match'] },
  {
    name: 'a zero gateway body limit',
    change: (d) => (d.edge = { maxRequestBodyBytes: 0 }),
    paths: ['edge.maxRequestBodyBytes'],
  },
  {
    name: 'a body limit given as text',
    change: (d) => (d.edge = { maxRequestBodyBytes: '1MiB' }),
    paths: ['edge.maxRequestBodyBytes'],
  },
  {
    name: 'a route body limit above 64 MiB',
    change: (d) => (d.routes[0].maxRequestBodyBytes = 128 * 1024 * 1024),
    paths: ['routes[0].maxRequestBodyBytes'],
  },
  {
    name: 'a "*" that is not a trailing "/*"',
    change: (d) => (d.routes[1].match = '/api/v1/auth*'),
    paths: ['routes[1].match'],
  },
  {
    name: 'a prefix rewrite without trailing slash',
    change: (d) => (d.routes[1].rewrite = '/auth'),
    paths: ['routes[1].rewrite'],
  },
  {
    name: 'duplicate explicit ids',
    change: (d) => {
      d.routes[0].id = 'x';
      d.routes[1].id = 'x';
    },
    paths: ['routes[1].id'],
  },
  {
    name: 'a second route with the same match',
    change: (d) => d.routes.push({ ...d.routes[0], id: 'again' }),
    paths: ['routes[2].match'],
  },
  {
    name: 'a route an earlier prefix route already takes',
    change: (d) => d.routes.push({ match: 'POST /api/v1/auth/login', to: 'customer', auth: 'none' }),
    paths: ['routes[2].match'],
  },
  { name: 'no routes', change: (d) => (d.routes = []), paths: ['routes'] },
  {
    name: 'an unknown parent group',
    change: (d) => (d.identity.groups.verified.inherits = 'basik'),
    paths: ['identity.groups.verified.inherits'],
  },
  {
    name: 'an inheritance cycle',
    change: (d) => (d.identity.groups.basic = { inherits: ['verified'], adds: ['read:own_profile'] }),
    paths: ['identity.groups.verified.inherits'],
  },
  {
    name: 'a misspelt group field',
    change: (d) => (d.identity.groups.verified.add = []),
    paths: ['identity.groups.verified.add'],
  },
  {
    name: 'a group that is neither list nor object',
    change: (d) => (d.identity.groups.basic = 5),
    paths: ['identity.groups.basic'],
  },
  {
    name: 'a group name that is not snake_case',
    change: (d) => (d.identity.groups.Premium = []),
    paths: ['identity.groups.Premium'],
  },
  {
    name: 'an unknown default group',
    change: (d) => (d.identity.defaultGroup = 'gold'),
    paths: ['identity.defaultGroup'],
  },
  {
    name: 'several mistakes at once',
    change: (d) => {
      d.routes[0].to = 'nope';
      d.routes[0].require = ['read:nothing'];
      d.routes[1].limits[0].per = 'user';
    },
    paths: ['routes[0].require[0]', 'routes[0].to', 'routes[1].limits[0].per'],
  },
];

describe('compileDefinition', () => {
  it('accepts the valid base definition', () => {
    expect(errorPaths(compileDefinition(validDefinition()))).toEqual([]);
  });

  it.each(invalid)('refuses $name at $paths', ({ change, paths }) => {
    const definition = validDefinition();
    change(definition);
    const result = compileDefinition(definition);
    expect(result.ok).toBe(false);
    expect(errorPaths(result)).toEqual([...paths].sort());
  });

  it('names the problem in words a person can act on', () => {
    const definition = validDefinition();
    definition.routes[0].require = ['read:own_profle'];
    definition.services.customer.timout = '5s';
    const result = compileDefinition(definition);
    expect(result.ok ? [] : result.errors).toEqual([
      { path: 'services.customer.timout', message: expect.stringContaining('unknown field "timout"') },
    ]);
    delete definition.services.customer.timout;
    const second = compileDefinition(definition);
    expect(second.ok ? [] : second.errors).toEqual([
      { path: 'routes[0].require[0]', message: expect.stringContaining('"read:own_profle" is granted by no group') },
    ]);
  });

  it('refuses something that is not an object at the root', () => {
    const result = compileDefinition(null);
    expect(result.ok ? [] : result.errors).toEqual([{ path: '', message: 'must be an object, got null' }]);
  });
});

describe('compileDefinitionFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sekisho-definition-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const write = async (name: string, content: string) => {
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  };

  it('loads YAML, JSON and a module default export to the same resources', async () => {
    const definition = validDefinition();
    const results = await Promise.all([
      compileDefinitionFile(await write('g.yaml', `# comment\n${JSON.stringify(definition)}`)),
      compileDefinitionFile(await write('g.json', JSON.stringify(definition))),
      compileDefinitionFile(await write('g.mjs', `export default ${JSON.stringify(definition)};`)),
      compileDefinitionFile(
        await write('g.ts', `const d: unknown = ${JSON.stringify(definition)};\nexport default d;`),
      ),
    ]);
    const hex = results.map((result) => {
      if (!result.ok) throw new Error(JSON.stringify(result.errors));
      return [...result.resources.values()].flat().map((resource) => resource.resource.value.toString('hex'));
    });
    for (const other of hex.slice(1)) expect(other).toEqual(hex[0]);
  });

  it('imports a changed module again instead of serving the cached one', async () => {
    const definition = validDefinition();
    const path = await write('reload.ts', `export default ${JSON.stringify(definition)};`);
    const first = await compileDefinitionFile(path);
    definition.listeners.http.port = 9090;
    await writeFile(path, `export default ${JSON.stringify(definition)};`);
    // Same size, so only the modification time tells the versions apart.
    await utimes(path, new Date(), new Date(Date.now() + 5_000));
    const second = await compileDefinitionFile(path);
    expect(first.ok && first.ir.listener.port).toBe(8080);
    expect(second.ok && second.ir.listener.port).toBe(9090);
  });

  const failures: Array<{ name: string; file: string; content?: string; message: RegExp }> = [
    { name: 'a missing file', file: 'absent.yaml', message: /absent\.yaml: ENOENT/ },
    { name: 'broken YAML', file: 'broken.yaml', content: 'routes: [unclosed', message: /broken\.yaml: / },
    {
      name: 'a module without default export',
      file: 'nodefault.mjs',
      content: 'export const x = 1;',
      message: /has no default export/,
    },
    {
      name: 'a module that throws',
      file: 'throws.mjs',
      content: "throw new Error('boom');",
      message: /throws\.mjs: boom/,
    },
    { name: 'an unsupported extension', file: 'gateway.toml', content: '', message: /unsupported file type "\.toml"/ },
  ];

  it.each(failures)(
    'reports $name as a FieldError with path "" instead of throwing',
    async ({ file, content, message }) => {
      const path = content === undefined ? join(dir, file) : await write(file, content);
      const result = await compileDefinitionFile(path);
      expect(result.ok).toBe(false);
      if (result.ok) return;
      expect(result.errors).toHaveLength(1);
      expect(result.errors[0]?.path).toBe('');
      expect(result.errors[0]?.message).toMatch(message);
    },
  );

  it('reports schema errors of a file with their field paths', async () => {
    const definition = validDefinition();
    definition.routes[0].to = 'nobody';
    const result = await compileDefinitionFile(await write('bad-ref.json', JSON.stringify(definition)));
    expect(errorPaths(result)).toEqual(['routes[0].to']);
  });
});
