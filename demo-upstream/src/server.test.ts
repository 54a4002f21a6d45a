import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type DemoUpstream, type EchoResponse, startDemoUpstream } from './server';

describe('startDemoUpstream', () => {
  let upstream: DemoUpstream | undefined;
  afterEach(async () => {
    await upstream?.close();
    upstream = undefined;
  });

  const start = async (maxBodyBytes?: number) => {
    upstream = await startDemoUpstream({ name: 'customer', port: 0, ...(maxBodyBytes ? { maxBodyBytes } : {}) });
    return upstream;
  };

  it('answers /health with the service name and does not count it as a request', async () => {
    const u = await start();
    const res = await fetch(`${u.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok', service: 'customer' });
    expect(u.requests()).toBe(0);
  });

  it('echoes method, raw path, query, headers and body', async () => {
    const u = await start();
    const res = await fetch(`${u.url}/profile//a%2Fb?x=1&tag=a&tag=b`, {
      method: 'POST',
      headers: { 'x-sekisho-user-id': 'user-1', 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(res.status).toBe(200);
    const echo = (await res.json()) as EchoResponse;
    expect(echo).toMatchObject({
      service: 'customer',
      instance: `127.0.0.1:${u.port}`,
      method: 'POST',
      path: '/profile//a%2Fb',
      query: { x: '1', tag: ['a', 'b'] },
      body: 'hello',
    });
    expect(echo.headers['x-sekisho-user-id']).toBe('user-1');
    expect(u.requests()).toBe(1);
  });

  it('applies a fault to the given number of requests, then echoes again', async () => {
    const u = await start();
    u.setFault({ status: 503, count: 2 });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await fetch(`${u.url}/x`)).status);
    expect(statuses).toEqual([503, 503, 200]);
    expect((await fetch(`${u.url}/health`)).status).toBe(200);
  });

  it('delays answers while a delay fault is set', async () => {
    const u = await start();
    u.setFault({ delayMs: 200 });
    const started = Date.now();
    expect((await fetch(`${u.url}/slow`)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    u.setFault(null);
  });

  it('keeps the fault a request started with when the fault is cleared during its delay', async () => {
    const u = await start();
    u.setFault({ status: 503, delayMs: 200, count: 1 });
    const delayed = fetch(`${u.url}/slow`);
    await new Promise((r) => setTimeout(r, 50));
    u.setFault(null);
    expect((await delayed).status).toBe(503);
    expect((await fetch(`${u.url}/x`)).status).toBe(200);
  });

  it('refuses a body over the limit with 413', async () => {
    const u = await start(10);
    const res = await fetch(`${u.url}/upload`, { method: 'POST', body: 'x'.repeat(11) });
    expect(res.status).toBe(413);
  });

  it('answers the next request on the same connection after refusing a large body early', async () => {
    // The 413 goes out before the body is read; the connection stays keep-alive, so the rest
    // of the body must still be consumed or the next request on it is never answered.
    const u = await start(1024);
    const socket = connect(u.port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    const body = Buffer.alloc(512 * 1024, 'a');
    socket.write(`POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`);
    socket.write(body);
    socket.write('GET /after HTTP/1.1\r\nhost: x\r\n\r\n');
    const deadline = Date.now() + 10_000;
    while (!received.includes('"path":"/after"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    expect(received).toMatch(/^HTTP\/1\.1 413 /);
    expect(received).toContain('"path":"/after"');
  });

  it('lets an in-flight request finish when closed', async () => {
    const u = await start();
    u.setFault({ delayMs: 300 });
    const inFlight = fetch(`${u.url}/slow`);
    await new Promise((r) => setTimeout(r, 50));
    const closed = u.close();
    expect((await inFlight).status).toBe(200);
    await closed;
    await expect(fetch(`${u.url}/health`)).rejects.toThrow();
    upstream = undefined;
  });
});
