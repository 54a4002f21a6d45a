import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, envDuration, envEnum, envHostPort, envPort, envUrl, loadConfig } from './config';
import { parseDuration } from './duration';

const schema = z.object({
  APP_PORT: envPort(9000),
  APP_TIMEOUT: envDuration('500ms'),
  APP_MODE: envEnum(['allow', 'deny'], 'allow'),
  APP_UPSTREAM: envHostPort('127.0.0.1:18000'),
});

describe('loadConfig', () => {
  it('applies defaults when variables are unset or empty', () => {
    expect(loadConfig(schema, { APP_PORT: '' })).toEqual({
      APP_PORT: 9000,
      APP_TIMEOUT: 500,
      APP_MODE: 'allow',
      APP_UPSTREAM: '127.0.0.1:18000',
    });
  });

  it('parses given values', () => {
    expect(
      loadConfig(schema, { APP_PORT: '1234', APP_TIMEOUT: '2s', APP_MODE: 'deny', APP_UPSTREAM: 'cp.internal:18000' }),
    ).toEqual({ APP_PORT: 1234, APP_TIMEOUT: 2000, APP_MODE: 'deny', APP_UPSTREAM: 'cp.internal:18000' });
  });

  it.each([
    ['APP_PORT', '70000'],
    ['APP_PORT', 'eighty'],
    ['APP_PORT', ' '],
    ['APP_PORT', '0x50'],
    ['APP_PORT', '-1'],
    ['APP_TIMEOUT', '5 minutes'],
    ['APP_MODE', 'maybe'],
    ['APP_UPSTREAM', 'no-port'],
  ])('refuses %s=%s with an error naming the variable', (variable, value) => {
    const attempt = () => loadConfig(schema, { [variable]: value });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(new RegExp(`${variable}: .*${value.trim()}`));
  });

  it('never echoes the password of a refused URL', () => {
    const urlSchema = z.object({ APP_REDIS: envUrl('redis://127.0.0.1:6379') });
    const attempt = () => loadConfig(urlSchema, { APP_REDIS: 'redis://admin:hunter2@ bad host' });
    expect(attempt).toThrow(/APP_REDIS: .*\/\/\*\*\*@ bad host/);
    expect(attempt).not.toThrow(/hunter2/);
  });
});

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['5s', 5000],
    ['1m', 60_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['1.5s', undefined],
    ['-1s', undefined],
    ['10', undefined],
    ['', undefined],
  ])('%s → %s', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
});
