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
});
