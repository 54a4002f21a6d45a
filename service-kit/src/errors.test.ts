import { describe, expect, it } from 'vitest';
import { errorBody, pickLanguage } from './errors';

describe('pickLanguage', () => {
  it.each([
    [undefined, 'ja'],
    ['', 'ja'],
    ['ja-JP,ja;q=0.9,en;q=0.8', 'ja'],
    ['en-US,en;q=0.9', 'en'],
    ['EN', 'en'],
    ['fr-FR,en;q=0.5', 'ja'],
  ] as const)('%j → %s', (header, language) => {
    expect(pickLanguage(header)).toBe(language);
  });
});

describe('errorBody', () => {
  const now = new Date('2030-01-01T00:00:00Z');

  it('has the shape of the reference design', () => {
    expect(errorBody('TOKEN_EXPIRED', { correlationId: 'req-1', now })).toEqual({
      success: false,
      error: {
        code: 'TOKEN_EXPIRED',
        message: 'トークンの有効期限が切れています',
        correlation_id: 'req-1',
        timestamp: '2030-01-01T00:00:00.000Z',
      },
      data: null,
    });
  });

  it('adds extra fields after the fixed ones, which they cannot replace', () => {
    const body = errorBody('INSUFFICIENT_PERMISSIONS', {
      correlationId: 'req-2',
      language: 'en',
      now,
      extra: { required_permissions: ['a'], code: 'OK', message: 'fine' },
    });
    expect(body.error).toMatchObject({
      code: 'INSUFFICIENT_PERMISSIONS',
      message: 'You do not have permission to perform this operation.',
      required_permissions: ['a'],
    });
    expect(Object.keys(body.error)).toEqual(['code', 'message', 'correlation_id', 'timestamp', 'required_permissions']);
  });
});
