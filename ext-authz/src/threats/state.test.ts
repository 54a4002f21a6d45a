import type { ThreatBlock } from '@sekisho/service-kit/threat-contract';
import { describe, expect, it } from 'vitest';
import { ThreatTable } from './state';

const now = 1_700_000_000_000;
const ipBlock: ThreatBlock = {
  kind: 'ip',
  subject: '198.51.100.1',
  rule: 'brute_force',
  severity: 'high',
  untilMs: now + 3_600_000,
};
const userBlock: ThreatBlock = {
  kind: 'user',
  subject: 'uid-x',
  rule: 'data_exfiltration',
  severity: 'critical',
  untilMs: now + 1_800_000,
};
const limit: ThreatBlock = {
  kind: 'limit',
  subject: 'uid-busy',
  rule: 'suspicious_usage',
  severity: 'medium',
  untilMs: now + 1_800_000,
  limit: 10,
  windowMs: 60_000,
};

describe('ThreatTable', () => {
  it('refuses a blocked IP until the block expires, and only that IP', () => {
    const table = new ThreatTable();
    table.replace([ipBlock]);
    expect(table.ipRefusal('198.51.100.1', now)?.code).toBe('IP_BLOCKED');
    expect(table.ipRefusal('198.51.100.2', now)).toBeUndefined();
    expect(table.ipRefusal(undefined, now)).toBeUndefined();
    expect(table.ipRefusal('198.51.100.1', ipBlock.untilMs - 1)?.code).toBe('IP_BLOCKED');
    expect(table.ipRefusal('198.51.100.1', ipBlock.untilMs)).toBeUndefined();
  });

  it('refuses a blocked user, and lifts it when removed', () => {
    const table = new ThreatTable();
    table.put(userBlock);
    expect(table.userRefusal('uid-x', now)?.code).toBe('USER_BLOCKED');
    table.remove('user:uid-x');
    expect(table.userRefusal('uid-x', now)).toBeUndefined();
  });

  it('lets a flagged user make 10 requests a minute, refuses the 11th with a Retry-After, and allows again next minute', () => {
    const table = new ThreatTable();
    table.put(limit);
    for (let i = 0; i < 10; i++) expect(table.userRefusal('uid-busy', now + i)).toBeUndefined();
    const refused = table.userRefusal('uid-busy', now + 10_000);
    expect(refused).toMatchObject({ code: 'RATE_LIMIT_EXCEEDED', retryAfterSeconds: 50 });
    expect(table.userRefusal('uid-busy', now + 60_000)).toBeUndefined();
    expect(table.userRefusal('uid-other', now)).toBeUndefined();
  });

  it('ends the aggressive limit with its 30 minutes', () => {
    const table = new ThreatTable();
    table.put(limit);
    for (let i = 0; i < 10; i++) table.userRefusal('uid-busy', limit.untilMs - 1_000);
    expect(table.userRefusal('uid-busy', limit.untilMs - 1_000)?.code).toBe('RATE_LIMIT_EXCEEDED');
    expect(table.userRefusal('uid-busy', limit.untilMs)).toBeUndefined();
  });

  it('keeps the longer of two blocks of one subject', () => {
    const table = new ThreatTable();
    table.put(ipBlock);
    table.put({ ...ipBlock, untilMs: now + 1_000 });
    expect(table.ipRefusal('198.51.100.1', now + 2_000)?.code).toBe('IP_BLOCKED');
  });
});
