import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromiumInstallHint, chromiumTestFlags, findChromium } from '@sekisho/devstack/chromium';
import { freePort } from '@sekisho/devstack/processes';
import { type Stack, startStack } from '@sekisho/devstack/stack';
import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { showStackLogsOnFailure } from './support';

// A real browser (Debian's headless Chromium) calls the gateway from a web page, the way the
// salon's PWA does: a fetch with a bearer token is not a "simple" request, so Chromium sends a
// CORS preflight first and only then the GET. From an allowed origin the JSON arrives; the
// same page from another origin is blocked by the browser itself.

let stack: Stack;
let dir: string;
let browser: BrowserContext;
const pages: Server[] = [];
let allowedOrigin: string;
let otherOrigin: string;

/** The SPA's page: it only needs an origin; the test drives fetch() inside it. */
function servePage(host: string, port: number): Promise<Server> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>salon</title><p>salon app</p>');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

beforeAll(async () => {
  const executablePath = findChromium();
  if (executablePath === undefined) throw new Error(chromiumInstallHint);

  dir = await mkdtemp(join(tmpdir(), 'sekisho-browser-'));
  const [gateway, customer, extAuthz, rateLimit, pagePort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  // Two loopback addresses are two origins: localhost is allowed, 127.0.0.2 is not.
  allowedOrigin = `http://localhost:${pagePort}`;
  otherOrigin = `http://127.0.0.2:${pagePort}`;
  pages.push(await servePage('127.0.0.1', pagePort), await servePage('127.0.0.2', pagePort));

  const definitionFile = join(dir, 'gateway.yaml');
  await writeFile(
    definitionFile,
    stringify({
      listeners: { http: { address: '127.0.0.1', port: gateway } },
      identity: {
        firebase: { projectId: 'demo-sekisho-e2e' },
        groupClaim: 'tier',
        groups: { member: ['read:own_profile'] },
      },
      policyServices: {
        extAuthz: { address: `127.0.0.1:${extAuthz}`, timeout: '2s' },
        rateLimit: { address: `127.0.0.1:${rateLimit}`, timeout: '2s', failureMode: 'allow' },
      },
      services: { customer: { endpoints: [`127.0.0.1:${customer}`], healthCheck: '/health' } },
      routes: [
        { match: 'GET /api/v1/customer/profile', to: 'customer', rewrite: '/profile', require: ['read:own_profile'] },
      ],
      edge: { cors: { allowOrigins: [allowedOrigin] } },
    }),
  );
  stack = await startStack({ definitionFile, logLevel: 'info' });

  browser = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
    executablePath,
    headless: true,
    args: [...chromiumTestFlags, '--host-resolver-rules=MAP localhost 127.0.0.1'],
  });
});

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  await Promise.all(pages.map((server) => new Promise((resolve) => server.close(resolve))));
  if (dir) await rm(dir, { recursive: true, force: true });
});

const showLogsOnFailure = () => showStackLogsOnFailure(() => stack, 200);

interface PageResult {
  ok: boolean;
  status?: number;
  json?: { service?: string; path?: string; headers?: Record<string, string> };
  requestId?: string | null;
  error?: string;
}

/** Opens the page at `origin` and has it fetch the profile with the token, as the SPA would. */
async function fetchFromPage(origin: string, token: string): Promise<PageResult> {
  const page = await browser.newPage();
  try {
    await page.goto(`${origin}/`);
    return await page.evaluate(
      async ({ url, token }) => {
        try {
          const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
          return {
            ok: true,
            status: response.status,
            json: (await response.json()) as PageResult['json'],
            requestId: response.headers.get('x-request-id'),
          };
        } catch (error) {
          return { ok: false, error: String(error) };
        }
      },
      { url: `${stack.gatewayUrl}/api/v1/customer/profile`, token },
    );
  } finally {
    await page.close();
  }
}

/** Envoy's JSON access-log lines (stack.logs() holds every process's recent output). */
function accessLogLines(): Array<{ method?: string; route_name?: string; status_code?: number }> {
  return stack
    .logs(2000)
    .split('\n')
    .flatMap((line) => {
      const start = line.indexOf('{');
      if (start < 0) return [];
      try {
        return [JSON.parse(line.slice(start))];
      } catch {
        return [];
      }
    });
}

describe('a real browser (headless Chromium) calling the gateway', () => {
  it('gets the JSON from an allowed origin, after a preflight Envoy answered', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('browser-user', { group: 'member' });
    const result = await fetchFromPage(allowedOrigin, token);
    expect(result.error).toBeUndefined();
    expect(result.status).toBe(200);
    expect(result.json?.service).toBe('customer');
    expect(result.json?.path).toBe('/profile');
    expect(result.json?.headers?.['x-sekisho-user-id']).toBe('browser-user');
    // x-request-id is exposed (access-control-expose-headers), so the page can report it.
    expect(result.requestId).toMatch(/^[0-9a-f-]{36}$/);

    await expect
      .poll(
        () =>
          accessLogLines().some(
            (line) =>
              line.method === 'OPTIONS' &&
              line.route_name === 'get-api-v1-customer-profile.preflight' &&
              line.status_code === 200,
          ),
        { timeout: 10_000 },
      )
      .toBe(true);
  });

  it('is blocked by the browser from an origin that is not allowed', async () => {
    showLogsOnFailure();
    const token = await stack.mintToken('browser-user', { group: 'member' });
    const result = await fetchFromPage(otherOrigin, token);
    expect(result.ok).toBe(false);
    expect(result.error).toContain('Failed to fetch');
    // Blocked because Envoy refused the preflight (no CORS headers), not for any other reason.
    await expect
      .poll(
        () =>
          accessLogLines().some(
            (line) =>
              line.method === 'OPTIONS' &&
              line.route_name === 'get-api-v1-customer-profile.preflight-refused' &&
              line.status_code === 403,
          ),
        { timeout: 10_000 },
      )
      .toBe(true);
  });
});
