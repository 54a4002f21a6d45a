import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, maskEmail, maskPhone, maskPII } from './logger';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { lines, logger: createLogger('test', { level: 'info', destination }) };
}

describe('createLogger', () => {
  it('writes JSON with the reference field names and never an authorization header', () => {
    const { lines, logger } = capture();
    logger.info(
      { category: 'security', correlation_id: 'abc', headers: { authorization: 'Bearer eyJsecret', host: 'x' } },
      'hello',
    );
    const record = JSON.parse(lines[0] as string);
    expect(record).toMatchObject({ service: 'test', level: 'INFO', category: 'security', message: 'hello' });
    expect(record.correlation_id).toBe('abc');
    expect(record.timestamp).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(lines[0]).not.toContain('eyJsecret');
    expect(record.headers.authorization).toBe('[REDACTED]');
  });

  it.each([
    ['a top-level cookie', { cookie: 'session=s3cr3t' }],
    ['a set-cookie header', { headers: { 'set-cookie': 'session=s3cr3t' } }],
    ['a proxy-authorization header', { headers: { 'proxy-authorization': 'Basic s3cr3t' } }],
    ['headers two levels down', { request: { headers: { authorization: 'Bearer s3cr3t' } } }],
    ['a refresh token in error details', { error_details: { refresh_token: 's3cr3t' } }],
    ['an access token', { access_token: 's3cr3t' }],
  ])('redacts %s', (_name, fields) => {
    const { lines, logger } = capture();
    logger.warn(fields, 'x');
    expect(lines[0]).not.toContain('s3cr3t');
    expect(lines[0]).toContain('[REDACTED]');
  });
});

describe('masking', () => {
  it.each([
    ['taro.yamada@example.com', 'ta***@example.com'],
    ['a@b.jp', 'a***@b.jp'],
    ['not-an-email', '***'],
  ])('maskEmail(%s) = %s', (input, expected) => expect(maskEmail(input)).toBe(expected));

  it.each([
    ['+81 90-1234-5678', '***5678'],
    ['123', '***'],
  ])('maskPhone(%s) = %s', (input, expected) => expect(maskPhone(input)).toBe(expected));

  it('masks tokens, emails and phones in free text', () => {
    expect(maskPII('user taro@example.com called +81 90-1234-5678 with eyJhbGc.eyJzdWIi.c2ln')).toBe(
      'user ta***@example.com called ***5678 with [TOKEN]',
    );
  });

  it('masks an email inside a path segment and a phone after a plus', () => {
    expect(maskPII('/api/v1/users/hanako.sato@example.co.jp/profile')).toBe(
      '/api/v1/users/ha***@example.co.jp/profile',
    );
    expect(maskPII('/sms/+819012345678')).toBe('/sms/***5678');
  });

  // Envoy lets a path grow to 60 KB. Before the patterns were anchored to the start of a
  // run, each of these took seconds (quadratic backtracking); now they take about a
  // millisecond. The bound is loose on purpose: it only has to catch the quadratic case.
  it.each([
    ['letters', 'a'.repeat(60_000)],
    ['letters and dots', 'a.'.repeat(30_000)],
    ['repeated JWT prefixes', 'eyJ'.repeat(20_000)],
    ['a domain that never ends in a TLD', `x@${'a.'.repeat(30_000)}1`],
  ])('masks 60 KB of %s in linear time', (_name, text) => {
    const started = performance.now();
    maskPII(text);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
