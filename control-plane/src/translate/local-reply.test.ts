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
    const passThrough = localReplyRules.findIndex((rule) => rule.flags?.includes('UAEX'));
    expect(localReplyRules[passThrough]?.code).toBeNull();
    // Before it only lines that name their own filters (CSRF, CORS, declared direct responses,
    // RBAC) and the 503: nothing that would take an ext-authz 401/403 by its status alone.
    const before = localReplyRules.slice(0, passThrough);
    expect(before.filter((rule) => rule.when === undefined).map((rule) => rule.status)).toEqual([503]);
  });

  it('builds an English and a Japanese mapper per code and one for each line kept as written', () => {
    const coded = localReplyRules.filter((rule) => rule.code !== null).length;
    const kept = localReplyRules.length - coded;
    const { mappers } = localReplyConfig();
    // ...and a last one that only adds the security headers to whatever no line names.
    expect(mappers).toHaveLength(2 * coded + kept + 1);
    for (const mapper of mappers.filter((m) => m.bodyFormatOverride !== undefined)) {
      expect(mapper.bodyFormatOverride?.contentType).toBe('application/json; charset=utf-8');
    }
  });
});
