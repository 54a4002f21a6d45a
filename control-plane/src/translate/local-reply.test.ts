import { errorCatalogue } from '@sekisho/service-kit/errors';
import { describe, expect, it } from 'vitest';
import { localReplyConfig, localReplyRules } from './local-reply';

describe('the local-reply table', () => {
  it('gives each status the catalogue code of that status', () => {
    for (const rule of localReplyRules) {
      if (rule.code !== null && rule.status !== undefined) {
        expect(errorCatalogue[rule.code].status, rule.code).toBe(rule.status);
      }
    }
  });

  it('keeps ext-authz denials as written, except the 503 of ext-authz being unreachable', () => {
    const passThrough = localReplyRules.findIndex((rule) => rule.code === null);
    expect(localReplyRules[passThrough]?.flags).toEqual(['UAEX']);
    const before = localReplyRules.slice(0, passThrough).map((rule) => rule.status);
    expect(before).toEqual([503]);
  });

  it('builds an English and a Japanese mapper per code and one for each line kept as written', () => {
    const coded = localReplyRules.filter((rule) => rule.code !== null).length;
    const kept = localReplyRules.length - coded;
    const { mappers } = localReplyConfig();
    expect(mappers).toHaveLength(2 * coded + kept);
    for (const mapper of mappers.filter((m) => m.bodyFormatOverride !== undefined)) {
      expect(mapper.bodyFormatOverride?.contentType).toBe('application/json; charset=utf-8');
    }
  });
});
